{{/* Names, labels and the pieces every workload shares. */}}

{{- define "omnistock.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "omnistock.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* A component's object name: <fullname>-<component>. */}}
{{- define "omnistock.componentName" -}}
{{- printf "%s-%s" (include "omnistock.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "omnistock.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "omnistock.name" .root }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "omnistock.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selectors on name and instance only. Each component is an app of its own (name:
inventory, topic-operator, ...), part of omnistock; instance is the release. */}}
{{- define "omnistock.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "omnistock.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if .image.digest -}}
{{ .image.repository }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{- define "omnistock.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "omnistock.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Kafka connection environment shared by services and the operator; secrets by reference. */}}
{{- define "omnistock.kafkaEnv" -}}
{{- $kafka := .Values.kafka -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ include "omnistock.kafkaBootstrap" . | quote }}
- name: KAFKA_TOPIC_PREFIX
  value: {{ $kafka.topicPrefix | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
{{- if $kafka.sasl.mechanism }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $kafka.sasl.mechanism | quote }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required with a SASL mechanism" $kafka.sasl.existingSecret }}
      key: {{ $kafka.sasl.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret }}
      key: {{ $kafka.sasl.passwordKey }}
{{- end }}
{{- if $kafka.tls.caSecret }}
- name: KAFKA_SSL_CAFILE
  value: /etc/omnistock/kafka-ca/{{ $kafka.tls.caKey }}
{{- end }}
{{- end }}

{{- define "omnistock.kafkaBootstrap" -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{ include "omnistock.componentName" (dict "root" . "component" "kafka") }}-kafka-bootstrap:9092
{{- else -}}
{{ required "kafka.bootstrapServers is required (or kafka.strimzi.enabled)" .Values.kafka.bootstrapServers }}
{{- end -}}
{{- end }}

{{- define "omnistock.kafkaVolumeMounts" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/omnistock/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "omnistock.kafkaVolumes" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- end }}

{{/* NetworkPolicy egress rules every workload needs: DNS and the brokers. */}}
{{- define "omnistock.egressDnsAndKafka" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
- ports:
  {{- range .Values.kafka.ports }}
    - {protocol: TCP, port: {{ . }}}
  {{- end }}
  {{- if .Values.kafka.strimzi.enabled }}
  to:
    - podSelector:
        matchLabels:
          strimzi.io/cluster: {{ include "omnistock.componentName" (dict "root" . "component" "kafka") }}
  {{- else if .Values.kafka.networkPeers }}
  to: {{- toYaml .Values.kafka.networkPeers | nindent 4 }}
  {{- end }}
{{- end }}
