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

{{/* The scrape job of a component, whatever the release is called: the alert rules
(files/prometheus) select and group by job="omnistock-<component>", and the dev stack's
Prometheus names its jobs the same way (omnistock.devstack.prometheus.scrape_job). Each
Service carries it in this label; each ServiceMonitor's jobLabel points at it. Without
it, the Prometheus operator would name the job after the Service (<release>-omnistock-x). */}}
{{- define "omnistock.scrapeJobLabel" -}}
omnistock.io/scrape-job
{{- end }}

{{- define "omnistock.scrapeJob" -}}
omnistock-{{ .component }}
{{- end }}

{{/* A service's DATABASE_URL: CloudNativePG's generated app user, or the existing Secret
(key = service name). Takes (dict "root" $ "name" <service>). */}}
{{- define "omnistock.databaseEnv" -}}
{{- $root := .root -}}
{{- if $root.Values.database.cnpg.enabled }}
{{- $postgres := include "omnistock.componentName" (dict "root" $root "component" "postgres") }}
# CloudNativePG's generated app user; DATABASE_URL is composed from it.
- name: DATABASE_USER
  valueFrom:
    secretKeyRef:
      name: {{ $postgres }}-app
      key: username
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $postgres }}-app
      key: password
- name: DATABASE_URL
  value: "postgresql+asyncpg://$(DATABASE_USER):$(DATABASE_PASSWORD)@{{ $postgres }}-rw:5432/omnistock_{{ .name | replace "-" "_" }}"
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required" $root.Values.database.existingSecret }}
      key: {{ .name }}
{{- end }}
{{- end }}

{{/* NetworkPolicy egress to PostgreSQL. */}}
{{- define "omnistock.egressDatabase" -}}
- ports:
    - {protocol: TCP, port: {{ .Values.database.port }}}
  {{- if .Values.database.cnpg.enabled }}
  to:
    - podSelector:
        matchLabels:
          cnpg.io/cluster: {{ include "omnistock.componentName" (dict "root" . "component" "postgres") }}
  {{- else if .Values.database.networkPeers }}
  to: {{- toYaml .Values.database.networkPeers | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Authentication of the services' APIs (AuthSettings, AUTH_*). A service refuses to
start without a credential source, so an install without one fails here, at render time,
naming the values to set, rather than as pods in a crash loop. */}}
{{- define "omnistock.auth.check" -}}
{{- $auth := .Values.auth -}}
{{- $jwks := list -}}
{{- range $source := list "url" "existingSecret" "existingConfigMap" -}}
{{- if index $auth.jwks $source }}{{ $jwks = append $jwks (printf "auth.jwks.%s" $source) }}{{ end -}}
{{- end -}}
{{- if gt (len $jwks) 1 -}}
{{- fail (printf "auth.jwks: set only one of url, existingSecret and existingConfigMap (found %s)" (join ", " $jwks)) -}}
{{- end -}}
{{- if and (not $jwks) (not $auth.apiKeys.existingSecret) -}}
{{- fail "auth: no credential source; every service refuses to start without one. Set auth.jwks.url, auth.jwks.existingSecret or auth.jwks.existingConfigMap (JWTs, with auth.issuer), and/or auth.apiKeys.existingSecret (hashed device API keys)" -}}
{{- end -}}
{{- if and $jwks (not $auth.issuer) -}}
{{- fail (printf "auth.issuer is required with %s: the services check the iss claim of every JWT" (first $jwks)) -}}
{{- end -}}
{{- end }}

{{- define "omnistock.auth.jwksFromFile" -}}
{{- if or .Values.auth.jwks.existingSecret .Values.auth.jwks.existingConfigMap }}true{{ end }}
{{- end }}

{{- define "omnistock.authEnv" -}}
{{- $auth := .Values.auth -}}
{{- with $auth.issuer }}
- name: AUTH_ISSUER
  value: {{ . | quote }}
{{- end }}
- name: AUTH_AUDIENCE
  value: {{ $auth.audience | quote }}
- name: AUTH_ALGORITHMS
  value: {{ toJson $auth.algorithms | quote }}
- name: AUTH_LEEWAY_S
  value: {{ $auth.leewaySeconds | int | quote }}
{{- if $auth.jwks.url }}
- name: AUTH_JWKS_URL
  value: {{ $auth.jwks.url | quote }}
- name: AUTH_JWKS_REFRESH_S
  value: {{ $auth.jwks.refreshSeconds | quote }}
{{- else if include "omnistock.auth.jwksFromFile" . }}
- name: AUTH_JWKS_FILE
  value: /etc/omnistock/auth/jwks/{{ $auth.jwks.key }}
{{- end }}
{{- if $auth.apiKeys.existingSecret }}
- name: AUTH_API_KEYS_FILE
  value: /etc/omnistock/auth/api-keys/{{ $auth.apiKeys.key }}
{{- end }}
- name: AUTH_RATE_PER_S
  value: {{ $auth.ratePerSecond | quote }}
- name: AUTH_RATE_BURST
  value: {{ $auth.rateBurst | int | quote }}
- name: AUTH_MAX_BODY_BYTES
  value: {{ $auth.maxBodyBytes | int | quote }}
{{- end }}

{{/* The JWKS and the API keys are mounted as whole directories, never with subPath: the
kubelet swaps a Secret or ConfigMap volume's files in place (an atomic symlink switch) when
the object changes, and the services re-read both files when they change, so a rotated
key or a new device key is picked up without a restart. A subPath mount is a copy taken
at start and never updated. The volumes list the one key, so a Secret without it fails
the pod at mount instead of every request at run time. */}}
{{- define "omnistock.authVolumeMounts" -}}
{{- if include "omnistock.auth.jwksFromFile" . }}
- name: auth-jwks
  mountPath: /etc/omnistock/auth/jwks
  readOnly: true
{{- end }}
{{- if .Values.auth.apiKeys.existingSecret }}
- name: auth-api-keys
  mountPath: /etc/omnistock/auth/api-keys
  readOnly: true
{{- end }}
{{- end }}

{{- define "omnistock.authVolumes" -}}
{{- $auth := .Values.auth -}}
{{- if $auth.jwks.existingSecret }}
- name: auth-jwks
  secret:
    secretName: {{ $auth.jwks.existingSecret }}
    items: [{key: {{ $auth.jwks.key | quote }}, path: {{ $auth.jwks.key | quote }}}]
    defaultMode: 288  # 0440: the owner and the pod's fsGroup read; nobody writes
{{- else if $auth.jwks.existingConfigMap }}
- name: auth-jwks
  configMap:
    name: {{ $auth.jwks.existingConfigMap }}
    items: [{key: {{ $auth.jwks.key | quote }}, path: {{ $auth.jwks.key | quote }}}]
    defaultMode: 288  # 0440
{{- end }}
{{- if $auth.apiKeys.existingSecret }}
- name: auth-api-keys
  secret:
    secretName: {{ $auth.apiKeys.existingSecret }}
    items: [{key: {{ $auth.apiKeys.key | quote }}, path: {{ $auth.apiKeys.key | quote }}}]
    defaultMode: 288  # 0440
{{- end }}
{{- end }}

{{/* The TCP port of an http(s) URL: the one it names, else the scheme's. */}}
{{- define "omnistock.urlPort" -}}
{{- $url := urlParse . -}}
{{- regexFind ":[0-9]+$" $url.host | trimPrefix ":" | default (ternary "443" "80" (eq $url.scheme "https")) -}}
{{- end }}

{{/* NetworkPolicy egress to the token issuer, when the services fetch its JWKS. */}}
{{- define "omnistock.egressJwks" -}}
{{- with .Values.auth.jwks.url -}}
# The token issuer's JWKS.
- ports:
    - {protocol: TCP, port: {{ include "omnistock.urlPort" . }}}
  {{- with $.Values.auth.jwks.networkPeers }}
  to: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
