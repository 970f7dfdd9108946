"""``python -m trafficreel`` runs the command line."""

from trafficreel.cli import main

main()
