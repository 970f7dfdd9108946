{{/* Names, labels and the pieces both workers share. */}}

{{- define "trafficreel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trafficreel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trafficreel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "trafficreel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trafficreel
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "stream"). */}}
{{- define "trafficreel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trafficreel.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "trafficreel.componentLabels" -}}
{{ include "trafficreel.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "trafficreel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "trafficreel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trafficreel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "trafficreel.settingsName" -}}{{ include "trafficreel.fullname" . }}-settings{{- end -}}
{{- define "trafficreel.rulesName" -}}{{ include "trafficreel.fullname" . }}-stream-rules{{- end -}}

{{/* "true" when the Kafka listener needs SASL, resp. TLS; empty otherwise. */}}
{{- define "trafficreel.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end -}}
{{- end -}}
{{- define "trafficreel.kafkaTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{- define "trafficreel.kafkaSecretName" -}}
{{- default (printf "%s-kafka" (include "trafficreel.fullname" .)) .Values.kafka.sasl.existingSecret -}}
{{- end -}}

{{- define "trafficreel.clickhouseSecretName" -}}
{{- default (printf "%s-clickhouse" (include "trafficreel.fullname" .)) .Values.clickhouse.auth.existingSecret -}}
{{- end -}}

{{- define "trafficreel.clickhouseHost" -}}
{{- if .Values.clickhouse.host -}}
{{- .Values.clickhouse.host -}}
{{- else if .Values.clickhouse.installation.enabled -}}
{{- /* the service clickhouse-operator creates for an installation */ -}}
{{- printf "clickhouse-%s" .Values.clickhouse.installation.name -}}
{{- else -}}
clickhouse
{{- end -}}
{{- end -}}

{{- define "trafficreel.kafkaCaDir" -}}/etc/trafficreel/kafka-ca{{- end -}}
{{- define "trafficreel.rulesDir" -}}/etc/trafficreel/rules{{- end -}}
{{- define "trafficreel.dataDir" -}}/var/lib/trafficreel{{- end -}}

{{/* TRAFFICREEL_KAFKA_CONFIG: librdkafka properties as JSON. The credentials are not in it:
     Kubernetes expands $(KAFKA_SASL_USERNAME) and $(KAFKA_SASL_PASSWORD) from the Secret. */}}
{{- define "trafficreel.kafkaConfig" -}}
{{- $conf := dict "security.protocol" .Values.kafka.securityProtocol -}}
{{- if include "trafficreel.kafkaSasl" . -}}
{{- $_ := set $conf "sasl.mechanism" .Values.kafka.sasl.mechanism -}}
{{- $_ := set $conf "sasl.username" "$(KAFKA_SASL_USERNAME)" -}}
{{- $_ := set $conf "sasl.password" "$(KAFKA_SASL_PASSWORD)" -}}
{{- end -}}
{{- if and (include "trafficreel.kafkaTls" .) .Values.kafka.tls.caSecret -}}
{{- $_ := set $conf "ssl.ca.location" (printf "%s/ca.crt" (include "trafficreel.kafkaCaDir" .)) -}}
{{- end -}}
{{- toJson (merge $conf .Values.kafka.extraConfig) -}}
{{- end -}}

{{/* Environment of a container talking to Kafka; the order matters for $(VAR) expansion. */}}
{{- define "trafficreel.kafkaEnv" -}}
{{- if include "trafficreel.kafkaSasl" . }}
{{- if not (or .Values.kafka.sasl.existingSecret .Values.kafka.sasl.password) }}
{{- fail "kafka.securityProtocol uses SASL: set kafka.sasl.existingSecret (a Secret you manage) or kafka.sasl.password" }}
{{- end }}
{{- if and (not .Values.kafka.sasl.existingSecret) (not .Values.kafka.sasl.username) }}
{{- fail "kafka.sasl.username is required when the chart renders the Kafka Secret" }}
{{- end }}
- name: KAFKA_SASL_USERNAME
{{- if .Values.kafka.sasl.username }}
  value: {{ .Values.kafka.sasl.username | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ include "trafficreel.kafkaSecretName" . }}
      key: {{ .Values.kafka.sasl.usernameKey }}
{{- end }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "trafficreel.kafkaSecretName" . }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
- name: TRAFFICREEL_KAFKA_CONFIG
  value: {{ include "trafficreel.kafkaConfig" . | quote }}
{{- end -}}

{{/* Environment of a container talking to ClickHouse. */}}
{{- define "trafficreel.clickhouseEnv" -}}
{{- $scheme := ternary "https" "http" .Values.clickhouse.secure -}}
{{- $host := printf "%s:%v/%s" (include "trafficreel.clickhouseHost" .) .Values.clickhouse.port .Values.clickhouse.database -}}
{{- if .Values.clickhouse.auth.enabled }}
{{- if not (or .Values.clickhouse.auth.existingSecret .Values.clickhouse.auth.password) }}
{{- fail "clickhouse.auth is enabled: set clickhouse.auth.existingSecret (a Secret you manage) or clickhouse.auth.password" }}
{{- end }}
- name: CLICKHOUSE_USER
  value: {{ .Values.clickhouse.auth.username | quote }}
- name: CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "trafficreel.clickhouseSecretName" . }}
      key: {{ .Values.clickhouse.auth.passwordKey }}
- name: TRAFFICREEL_CLICKHOUSE_URL
  value: {{ printf "%s://$(CLICKHOUSE_USER):$(CLICKHOUSE_PASSWORD)@%s" $scheme $host | quote }}
{{- else }}
- name: TRAFFICREEL_CLICKHOUSE_URL
  value: {{ printf "%s://%s" $scheme $host | quote }}
{{- end }}
{{- end -}}

{{/* Annotations that roll the pods when their configuration or credentials change. */}}
{{- define "trafficreel.checksums" -}}
checksum/settings: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secrets: {{ include (print .Template.BasePath "/secrets.yaml") . | sha256sum }}
{{- end -}}

{{- define "trafficreel.healthPorts" -}}
- name: http-health
  containerPort: {{ .Values.healthPort }}
  protocol: TCP
{{- end -}}

{{- define "trafficreel.probes" -}}
livenessProbe:
  httpGet:
    path: /live
    port: http-health
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /ready
    port: http-health
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* Writable places under a read-only root: /tmp, and the working directory (faust's data). */}}
{{- define "trafficreel.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
- name: data
  emptyDir:
    sizeLimit: 256Mi
{{- if and (include "trafficreel.kafkaTls" .) .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "trafficreel.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ include "trafficreel.dataDir" . }}
{{- if and (include "trafficreel.kafkaTls" .) .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: {{ include "trafficreel.kafkaCaDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod-level fields both Deployments take from their component's values. */}}
{{- define "trafficreel.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The KEDA sasl mode for librdkafka's sasl.mechanism. */}}
{{- define "trafficreel.kedaSasl" -}}
{{- get (dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512") .Values.kafka.sasl.mechanism -}}
{{- end -}}
