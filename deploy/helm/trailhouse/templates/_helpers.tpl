{{/* Chart name. */}}
{{- define "trailhouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix of every resource. */}}
{{- define "trailhouse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "trailhouse.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "trailhouse.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Common labels; call with (dict "ctx" $ "component" "ingest"). */}}
{{- define "trailhouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "trailhouse.selectorLabels" . }}
{{- end -}}

{{- define "trailhouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trailhouse.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "trailhouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trailhouse.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image of a component; call with (dict "ctx" $ "image" "ingest" "digestKey" "ingest"). */}}
{{- define "trailhouse.image" -}}
{{- $img := .ctx.Values.image -}}
{{- $repo := printf "%s/%s-%s" $img.registry $img.repositoryPrefix .image -}}
{{- $digest := index $img.digests .digestKey -}}
{{- if $digest -}}
{{ $repo }}@{{ $digest }}
{{- else -}}
{{ $repo }}:{{ default .ctx.Chart.AppVersion $img.tag }}
{{- end -}}
{{- end -}}

{{/* Kafka connection settings. */}}
{{- define "trailhouse.kafkaEnv" -}}
- name: TRAILHOUSE_KAFKA_BROKERS
  value: {{ .Values.kafka.brokers | quote }}
- name: TRAILHOUSE_KAFKA_TOPIC
  value: {{ .Values.kafka.topic | quote }}
- name: TRAILHOUSE_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}
- name: TRAILHOUSE_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: TRAILHOUSE_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required with a SASL_* security protocol" .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: TRAILHOUSE_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: TRAILHOUSE_KAFKA_SSL_CA_LOCATION
  value: /etc/trailhouse/kafka-ca/{{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end -}}

{{/* ClickHouse connection settings. */}}
{{- define "trailhouse.clickhouseEnv" -}}
- name: TRAILHOUSE_CLICKHOUSE_URL
  value: {{ .Values.clickhouse.url | quote }}
- name: TRAILHOUSE_CLICKHOUSE_DATABASE
  value: {{ .Values.clickhouse.database | quote }}
- name: TRAILHOUSE_CLICKHOUSE_USER
  value: {{ .Values.clickhouse.user | quote }}
- name: TRAILHOUSE_CLICKHOUSE_COMPRESSION
  value: {{ .Values.clickhouse.compression | quote }}
{{- if .Values.clickhouse.existingSecret }}
- name: TRAILHOUSE_CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.clickhouse.existingSecret }}
      key: {{ .Values.clickhouse.passwordKey }}
{{- end }}
{{- end -}}

{{/* Logging and tracing. */}}
{{- define "trailhouse.telemetryEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- if .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
{{- end }}
{{- end -}}

{{/* Volume and mount of the Kafka CA, when configured. */}}
{{- define "trailhouse.kafkaCaVolume" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    defaultMode: 0444
{{- end }}
{{- end -}}

{{- define "trailhouse.kafkaCaMount" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/trailhouse/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* HTTP probes on the health endpoints of a port name. */}}
{{- define "trailhouse.probes" -}}
livenessProbe:
  httpGet:
    path: /health/live
    port: {{ . }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /health/ready
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
startupProbe:
  httpGet:
    path: /health/live
    port: {{ . }}
  periodSeconds: 2
  failureThreshold: 30
{{- end -}}

{{/* Pod-level scheduling and security shared by every workload; call with (dict "ctx" $ "component" "x" "values" .Values.x). */}}
{{- define "trailhouse.podCommon" -}}
serviceAccountName: {{ .serviceAccount | default (include "trailhouse.serviceAccountName" .ctx) }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
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
{{- if .ctx.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $.ctx.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.ctx.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "trailhouse.selectorLabels" (dict "ctx" $.ctx "component" $.component) | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}
