{{/*
Names and labels.
*/}}
{{- define "postmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "postmesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "postmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "postmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "postmesh.labels" -}}
helm.sh/chart: {{ include "postmesh.chart" . }}
{{ include "postmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: postmesh
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "c" $component). */}}
{{- define "postmesh.componentLabels" -}}
{{ include "postmesh.labels" .root }}
app.kubernetes.io/component: {{ .c.name }}
{{- end }}

{{- define "postmesh.componentSelectorLabels" -}}
{{ include "postmesh.selectorLabels" .root }}
app.kubernetes.io/component: {{ .c.name }}
{{- end }}

{{/*
The six services. Fixed facts (module, container ports, which env var each port is set by)
live here; what an operator tunes lives in values.yaml under .Values.<key>.
  kind: edge (public mail ports, TLS), grpc (internal API), worker (no listener)
*/}}
{{- define "postmesh.componentTable" -}}
smtpEdge:
  key: smtpEdge
  name: smtp-edge
  # Publishes to or consumes the Kafka bus (gets the kafka.* security settings).
  bus: true
  module: postmesh.smtp_edge
  kind: edge
  opsPort: 9101
  hostEnv: POSTMESH_SMTP_HOST
  ports:
    - {name: smtp, containerPort: 2525, env: POSTMESH_SMTP_MX_PORT}
    - {name: submission, containerPort: 2587, env: POSTMESH_SMTP_SUBMISSION_PORT}
    - {name: submissions, containerPort: 2465, env: POSTMESH_SMTP_SUBMISSIONS_PORT}
imapGw:
  key: imapGw
  name: imap-gw
  # Publishes to or consumes the Kafka bus (gets the kafka.* security settings).
  bus: true
  module: postmesh.imap_gw
  kind: edge
  opsPort: 9102
  hostEnv: POSTMESH_IMAP_HOST
  ports:
    - {name: imap, containerPort: 1143, env: POSTMESH_IMAP_PORT}
    - {name: imaps, containerPort: 1993, env: POSTMESH_IMAPS_PORT}
pop3Gw:
  key: pop3Gw
  name: pop3-gw
  module: postmesh.pop3_gw
  kind: edge
  opsPort: 9103
  hostEnv: POSTMESH_POP3_HOST
  ports:
    - {name: pop3, containerPort: 1110, env: POSTMESH_POP3_PORT}
    - {name: pop3s, containerPort: 1995, env: POSTMESH_POP3S_PORT}
delivery:
  key: delivery
  name: delivery
  # Publishes to or consumes the Kafka bus (gets the kafka.* security settings).
  bus: true
  module: postmesh.delivery
  kind: worker
  opsPort: 9104
  ports: []
store:
  key: store
  name: store
  # Publishes to or consumes the Kafka bus (gets the kafka.* security settings).
  bus: true
  module: postmesh.store
  kind: grpc
  opsPort: 9105
  ports:
    - {name: grpc, containerPort: 50061}
auth:
  key: auth
  name: auth
  module: postmesh.auth
  kind: grpc
  opsPort: 9106
  ports:
    - {name: grpc, containerPort: 50062}
    - {name: admin, containerPort: 8080}
{{- end }}

{{- define "postmesh.components" -}}
{{- include "postmesh.componentTable" . | fromYaml | toJson }}
{{- end }}

{{/* Resource name of a component: <fullname>-<component>. */}}
{{- define "postmesh.componentName" -}}
{{- printf "%s-%s" (include "postmesh.fullname" .root) .c.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "postmesh.image" -}}
{{- $own := (index .root.Values .c.key).image | default dict }}
{{- $repo := $own.repository | default (printf "%s/%s" .root.Values.image.repository .c.name) }}
{{- if $own.digest }}
{{- printf "%s@%s" $repo $own.digest }}
{{- else }}
{{- printf "%s:%s" $repo ($own.tag | default .root.Values.image.tag | default .root.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "postmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "postmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Secrets: the chart's own or an existing one the operator names.
*/}}
{{- define "postmesh.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else if or .Values.tls.certManager.enabled (and .Values.tls.cert .Values.tls.key) }}
{{- printf "%s-tls" (include "postmesh.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret with a component's gRPC certificate (tls.crt, tls.key, ca.crt); empty when
plaintext. Call with the component context (dict "root" $ "c" $c). */}}
{{- define "postmesh.grpcTlsSecretName" -}}
{{- if ne .root.Values.grpcTls.mode "plaintext" }}
{{- printf "%s-grpc-%s" (include "postmesh.fullname" .root) .c.name }}
{{- end }}
{{- end }}

{{- define "postmesh.adminTokenSecretName" -}}
{{- default (printf "%s-admin-token" (include "postmesh.fullname" .)) .Values.auth.adminToken.existingSecret }}
{{- end }}

{{- define "postmesh.dkimSecretName" -}}
{{- if .Values.delivery.dkim.existingSecret }}
{{- .Values.delivery.dkim.existingSecret }}
{{- else if .Values.delivery.dkim.keys }}
{{- printf "%s-dkim" (include "postmesh.fullname" .) }}
{{- end }}
{{- end }}

{{/* Where POSTMESH_MONGODB_URL comes from: (name, key) of a Secret. */}}
{{- define "postmesh.mongodbSecretName" -}}
{{- if .Values.mongodb.community.enabled }}
{{- printf "%s-mongodb-%s" (include "postmesh.fullname" .) .Values.mongodb.community.username }}
{{- else if .Values.mongodb.existingSecret }}
{{- .Values.mongodb.existingSecret }}
{{- else }}
{{- printf "%s-mongodb" (include "postmesh.fullname" .) }}
{{- end }}
{{- end }}

{{- define "postmesh.mongodbSecretKey" -}}
{{- if .Values.mongodb.community.enabled }}
{{- print "connectionString.standard" }}
{{- else if .Values.mongodb.existingSecret }}
{{- .Values.mongodb.existingSecretKey }}
{{- else }}
{{- print "url" }}
{{- end }}
{{- end }}

{{- define "postmesh.mongodbResourceName" -}}
{{- printf "%s-mongodb" (include "postmesh.fullname" .) }}
{{- end }}

{{/* How the bus components reach Kafka, as JSON: {protocol, mechanism, username,
     passwordSecret {name, key}, caSecret {name, key}, clientCertSecret}. From kafka.* for an
     external Kafka; from the Strimzi cluster's SCRAM listener, KafkaUser and cluster CA when
     kafka.strimzi.authentication is scram-sha-512. */}}
{{- define "postmesh.kafkaClient" -}}
{{- $k := .Values.kafka }}
{{- if and $k.strimzi.enabled (eq $k.strimzi.authentication "scram-sha-512") }}
{{- $user := include "postmesh.kafkaUserName" . }}
{{- toJson (dict "protocol" "SASL_SSL" "mechanism" "SCRAM-SHA-512" "username" $user "passwordSecret" (dict "name" $user "key" "password") "caSecret" (dict "name" (printf "%s-cluster-ca-cert" (include "postmesh.kafkaClusterName" .)) "key" "ca.crt") "clientCertSecret" "") }}
{{- else }}
{{- if and $k.strimzi.enabled (ne $k.securityProtocol "PLAINTEXT") }}
{{- fail "kafka.securityProtocol applies to an external Kafka: for the chart's Strimzi cluster set kafka.strimzi.authentication=scram-sha-512" }}
{{- end }}
{{- toJson (dict "protocol" $k.securityProtocol "mechanism" $k.sasl.mechanism "username" $k.sasl.username "passwordSecret" $k.sasl.passwordSecret "caSecret" $k.tls.caSecret "clientCertSecret" $k.tls.clientCertSecret) }}
{{- end }}
{{- end }}

{{/* The KafkaUser (and SCRAM user name) of the services on the chart's Strimzi cluster. */}}
{{- define "postmesh.kafkaUserName" -}}
{{- printf "%s-services" (include "postmesh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Kafka client security of the bus components (ConfigMap data lines); the files are
     mounted by the Deployment from the Secrets of postmesh.kafkaClient. */}}
{{- define "postmesh.kafkaSecurityConfig" -}}
{{- $kc := include "postmesh.kafkaClient" . | fromJson }}
POSTMESH_KAFKA_SECURITY_PROTOCOL: {{ $kc.protocol | quote }}
{{- if hasPrefix "SASL_" $kc.protocol }}
POSTMESH_KAFKA_SASL_MECHANISM: {{ $kc.mechanism | quote }}
POSTMESH_KAFKA_USERNAME: {{ required "kafka.sasl.username is required with a SASL_* kafka.securityProtocol" $kc.username | quote }}
{{- $_ := required "kafka.sasl.passwordSecret.name is required with a SASL_* kafka.securityProtocol" $kc.passwordSecret.name }}
POSTMESH_KAFKA_PASSWORD_FILE: "/etc/postmesh/kafka-sasl/password"
{{- end }}
{{- if $kc.caSecret.name }}
POSTMESH_KAFKA_TLS_CA_FILE: "/etc/postmesh/kafka-tls-ca/ca.crt"
{{- end }}
{{- if $kc.clientCertSecret }}
POSTMESH_KAFKA_TLS_CERT_FILE: "/etc/postmesh/kafka-tls-client/tls.crt"
POSTMESH_KAFKA_TLS_KEY_FILE: "/etc/postmesh/kafka-tls-client/tls.key"
{{- end }}
{{- end }}

{{/* MongoDB TLS files of store and auth (ConfigMap data lines). */}}
{{- define "postmesh.mongodbTlsConfig" -}}
{{- $t := .Values.mongodb.tls }}
{{- if $t.caSecret.name }}
POSTMESH_MONGODB_TLS_CA_FILE: "/etc/postmesh/mongodb-tls-ca/ca.crt"
{{- end }}
{{- if $t.clientCertKeySecret.name }}
POSTMESH_MONGODB_TLS_CERT_KEY_FILE: "/etc/postmesh/mongodb-tls-client/tls.pem"
{{- end }}
{{- end }}

{{/* Secret volumes (name, secret, key -> file) a component mounts for Kafka and MongoDB:
     a JSON list of {name, secret, items: [{key, path}], mountPath}. */}}
{{- define "postmesh.backendSecretVolumes" -}}
{{- $k := include "postmesh.kafkaClient" .root | fromJson }}
{{- $m := .root.Values.mongodb.tls }}
{{- $out := list }}
{{- if .c.bus }}
{{- if and (hasPrefix "SASL_" $k.protocol) $k.passwordSecret.name }}
{{- $out = append $out (dict "name" "kafka-sasl" "secret" $k.passwordSecret.name "items" (list (dict "key" $k.passwordSecret.key "path" "password")) "mountPath" "/etc/postmesh/kafka-sasl") }}
{{- end }}
{{- if $k.caSecret.name }}
{{- $out = append $out (dict "name" "kafka-tls-ca" "secret" $k.caSecret.name "items" (list (dict "key" $k.caSecret.key "path" "ca.crt")) "mountPath" "/etc/postmesh/kafka-tls-ca") }}
{{- end }}
{{- if $k.clientCertSecret }}
{{- $out = append $out (dict "name" "kafka-tls-client" "secret" $k.clientCertSecret "items" (list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key")) "mountPath" "/etc/postmesh/kafka-tls-client") }}
{{- end }}
{{- end }}
{{- if or (eq .c.name "store") (eq .c.name "auth") }}
{{- if $m.caSecret.name }}
{{- $out = append $out (dict "name" "mongodb-tls-ca" "secret" $m.caSecret.name "items" (list (dict "key" $m.caSecret.key "path" "ca.crt")) "mountPath" "/etc/postmesh/mongodb-tls-ca") }}
{{- end }}
{{- if $m.clientCertKeySecret.name }}
{{- $out = append $out (dict "name" "mongodb-tls-client" "secret" $m.clientCertKeySecret.name "items" (list (dict "key" $m.clientCertKeySecret.key "path" "tls.pem")) "mountPath" "/etc/postmesh/mongodb-tls-client") }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{- define "postmesh.kafkaClusterName" -}}
{{- printf "%s-kafka" (include "postmesh.fullname" .) }}
{{- end }}

{{- define "postmesh.kafkaBootstrapServers" -}}
{{- if .Values.kafka.strimzi.enabled }}
{{- $port := ternary 9093 9092 (eq .Values.kafka.strimzi.authentication "scram-sha-512") }}
{{- printf "%s-kafka-bootstrap:%v" (include "postmesh.kafkaClusterName" .) $port }}
{{- else }}
{{- required "kafka.bootstrapServers is required unless kafka.strimzi.enabled" .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/*
A secret value that survives upgrades: reuse what the cluster already holds (lookup), else
generate one. Call with (dict "root" $ "name" <secret> "key" <key> "length" <n>).
*/}}
{{- define "postmesh.stableRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if and $existing (index ($existing.data | default dict) .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}

{{/* The broker's name of a logical topic: (list $root "postmesh.inbound"). */}}
{{- define "postmesh.kafkaTopic" -}}
{{- $root := index . 0 -}}
{{- printf "%s%s" $root.Values.kafka.topicPrefix (index . 1) -}}
{{- end }}
