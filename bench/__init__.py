"""Benchmarks: ``python -m bench NAME [--quick] [--json]`` from the repository root.

Each benchmark measures the project's code and a baseline in the same run, on the same data, and
reports medians and their ratio, so that a noisy machine moves both sides alike.
"""
