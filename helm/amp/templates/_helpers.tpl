{{/* Names and labels. */}}
{{- define "amp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "amp.fullname" -}}
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

{{- define "amp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels common to every object of the release. */}}
{{- define "amp.labels" -}}
helm.sh/chart: {{ include "amp.chart" . }}
app.kubernetes.io/name: {{ include "amp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: amp
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "ingest"). */}}
{{- define "amp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "amp.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "amp.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The identity Secret: the one given, or the chart's. */}}
{{- define "amp.identitySecret" -}}
{{- default (printf "%s-identity" (include "amp.fullname" .)) .Values.identity.existingSecret }}
{{- end }}

{{/* The public URL: publicUrl, or derived from the ingress host. */}}
{{- define "amp.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if .Values.ingress.enabled }}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host }}
{{- end }}
{{- end }}

{{/* NATS URLs: the installed subchart's Service, or nats.urls. */}}
{{- define "amp.natsUrls" -}}
{{- if .Values.nats.enabled }}
{{- $name := "nats" }}
{{- if .Values.nats.fullnameOverride }}
{{- $name = .Values.nats.fullnameOverride }}
{{- else if contains "nats" .Release.Name }}
{{- $name = .Release.Name }}
{{- else }}
{{- $name = printf "%s-nats" .Release.Name }}
{{- end }}
{{- printf "nats://%s:4222" ($name | trunc 63 | trimSuffix "-") }}
{{- else }}
{{- required "nats.urls is required when nats.enabled is false" .Values.nats.urls }}
{{- end }}
{{- end }}

{{/*
TOML rendering. Helm's toToml prints every number as a float (10 -> 10.0), which the
binaries' integer keys refuse, so tables are written here: whole numbers as integers,
strings as JSON strings (valid TOML basic strings), nil values left out.
(dict "table" $map "path" "dotted.prefix")
*/}}
{{- define "amp.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "amp.toml.value" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ ternary "true" "false" $v }}
{{- else if kindIs "float64" $v }}{{ if eq $v (floor $v) }}{{ printf "%d" (int64 $v) }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) }}{{ $v }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "amp.toml.value" $e }}{{ end }}]
{{- else }}{{ fail (printf "cannot write %v (%s) as a TOML value" $v (kindOf $v)) }}
{{- end }}
{{- end }}

{{- define "amp.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) (kindIs "map" (first .)) }}true{{ end }}
{{- end }}

{{- define "amp.toml" -}}
{{- $path := .path }}
{{- range $k, $v := .table }}
{{- if and (not (kindIs "invalid" $v)) (not (kindIs "map" $v)) (not (include "amp.toml.isTableArray" $v)) }}
{{ include "amp.toml.key" $k }} = {{ include "amp.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .table }}
{{- $p := include "amp.toml.key" $k }}
{{- if $path }}{{ $p = printf "%s.%s" $path $p }}{{ end }}
{{- if kindIs "map" $v }}

[{{ $p }}]
{{- include "amp.toml" (dict "table" $v "path" $p) }}
{{- else if include "amp.toml.isTableArray" $v }}
{{- range $v }}

[[{{ $p }}]]
{{- include "amp.toml" (dict "table" . "path" $p) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the identity Secret is mounted. */}}
{{- define "amp.secretsDir" -}}/etc/amp/secrets{{- end }}

{{/* Where a service's NATS credential (its own key of nats.auth.existingSecret) is mounted. */}}
{{- define "amp.natsAuthDir" -}}/run/amp/nats-auth{{- end }}

{{/* Where the NATS CA (ca/) and client certificate (client/) are mounted. */}}
{{- define "amp.natsTlsDir" -}}/run/amp/nats-tls{{- end }}

{{/* Whether the services log in to NATS (mode cluster). */}}
{{- define "amp.natsAuth" -}}
{{- $mode := include "amp.natsAuthMode" . }}
{{- if not (has $mode (list "none" "password" "nkey" "credentials")) }}
{{- fail (printf "nats.auth.mode must be none, password, nkey or credentials, not %q" $mode) }}
{{- end }}
{{- if ne $mode "none" }}
{{- /* With the bundled NATS a password Secret may be the generated one (nats-auth-secret.yaml). */}}
{{- if not (and .Values.nats.enabled (eq $mode "password")) }}
{{- $_ := required "nats.auth.existingSecret is required when nats.auth.mode is not none" .Values.nats.auth.existingSecret }}
{{- end }}true
{{- end }}
{{- end }}

{{/* The services' NATS login mode: nats.auth.mode, or when empty `password` with the bundled
     NATS (nats.enabled) and `none` without. */}}
{{- define "amp.natsAuthMode" -}}
{{- include "amp.natsAuthModeOf" (dict "auth" .Values.nats.auth "enabled" .Values.nats.enabled) }}
{{- end }}

{{/* One service's NATS login, as AMP__NATS__AUTH__* variables: (dict "root" $ "component" "ingest"). */}}
{{- define "amp.natsAuthEnv" -}}
{{- $root := .root }}
{{- if include "amp.natsAuth" $root }}
{{- $file := printf "%s/credential" (include "amp.natsAuthDir" $root) }}
{{- $mode := include "amp.natsAuthMode" $root }}
{{- if eq $mode "password" }}
- name: AMP__NATS__AUTH__USER
  value: {{ required (printf "nats.auth.users.%s is required" .component) (get $root.Values.nats.auth.users .component) | quote }}
- name: AMP__NATS__AUTH__PASSWORD_FILE
  value: {{ $file | quote }}
{{- else if eq $mode "nkey" }}
- name: AMP__NATS__AUTH__NKEY_SEED_FILE
  value: {{ $file | quote }}
{{- else }}
- name: AMP__NATS__AUTH__CREDENTIALS_FILE
  value: {{ $file | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The [server], [log] and [nats] tables every cluster binary shares. */}}
{{- define "amp.commonConfig" -}}
{{- $server := dict "listen" "0.0.0.0:8080" "domain" .Values.domain "key_file" (printf "%s/provider-key.pem" (include "amp.secretsDir" .)) "pepper_file" (printf "%s/key-pepper" (include "amp.secretsDir" .)) }}
{{- with (include "amp.publicUrl" .) }}{{ $_ := set $server "public_url" . }}{{ end }}
{{- $nats := dict "urls" (include "amp.natsUrls" .) "replicas" .Values.nats.replicas "prefix" .Values.nats.prefix "limits_sync_ms" (int (ternary .Values.nats.limitsSyncMs 100 (hasKey .Values.nats "limitsSyncMs"))) }}
{{- if .Values.nats.tls.enabled }}
{{- $tls := dict "required" true }}
{{- if .Values.nats.tls.caSecret }}{{ $_ := set $tls "ca_file" (printf "%s/ca/ca.crt" (include "amp.natsTlsDir" .)) }}{{ end }}
{{- if .Values.nats.tls.clientSecret }}
{{- $_ := set $tls "cert_file" (printf "%s/client/tls.crt" (include "amp.natsTlsDir" .)) }}
{{- $_ := set $tls "key_file" (printf "%s/client/tls.key" (include "amp.natsTlsDir" .)) }}
{{- end }}
{{- $_ := set $nats "tls" $tls }}
{{- end }}
{{- $store := dict "backend" .Values.store.backend }}
{{- if eq .Values.store.backend "cql" }}
{{- $c := .Values.store.cql }}
{{- $cql := dict "contact_points" $c.contactPoints "keyspace" $c.keyspace "datacenter" $c.datacenter "replication_factor" $c.replicationFactor "consistency" $c.consistency "migrate_on_start" $c.migrateOnStart }}
{{- with $c.username }}{{ $_ := set $cql "username" . }}{{ end }}
{{- if $c.passwordSecret }}{{ $_ := set $cql "password_file" "/run/amp/cql/password" }}{{ end }}
{{- with $c.tls }}{{ if .enabled }}
{{- $tls := dict "enabled" true "verify_hostname" .verifyHostname }}
{{- if .secret }}{{ $_ := set $tls "ca_file" "/run/amp/cql-tls/ca.crt" }}{{ end }}
{{- if and .secret .clientCertificate }}{{ $_ := set $tls "cert_file" "/run/amp/cql-tls/tls.crt" }}{{ $_ := set $tls "key_file" "/run/amp/cql-tls/tls.key" }}{{ end }}
{{- with .serverName }}{{ $_ := set $tls "server_name" . }}{{ end }}
{{- $_ := set $cql "tls" $tls }}
{{- end }}{{ end }}
{{- $_ := set $store "cql" $cql }}
{{- end }}
{{- with .Values.store.blobs }}{{ if eq .backend "s3" }}
{{- $s3 := dict "bucket" .s3.bucket "prefix" .s3.prefix "region" .s3.region "path_style" .s3.pathStyle "allow_http" .s3.allowHttp }}
{{- with .s3.endpoint }}{{ $_ := set $s3 "endpoint" . }}{{ end }}
{{- if .s3.secretAccessKeySecret }}{{ $_ := set $s3 "access_key_id" .s3.accessKeyId }}{{ $_ := set $s3 "secret_access_key_file" "/run/amp/s3/secret-access-key" }}{{ end }}
{{- $_ := set $store "blobs" (dict "backend" "s3" "s3" $s3) }}
{{- end }}{{ end }}
{{- toYaml (dict "server" $server "log" (dict "filter" .Values.log.filter "format" "json") "nats" $nats "store" $store) }}
{{- end }}

{{/* The federation section as the binaries name its keys. */}}
{{- define "amp.federationConfig" -}}
{{- toYaml (dict "enabled" .Values.federation.enabled "trust" .Values.federation.trust "allowed_providers" .Values.federation.allowedProviders "blocked_providers" .Values.federation.blockedProviders "peers" .Values.federation.peers) }}
{{- end }}

{{/* One binary's whole config as YAML (then written as TOML): (dict "root" $ "component" "ingest"). */}}
{{- define "amp.config" -}}
{{- $root := .root }}
{{- $c := dict }}
{{- if eq .component "ampd" }}
{{- $server := dict "listen" "0.0.0.0:8080" "domain" $root.Values.domain "data_dir" "/var/lib/amp" }}
{{- with (include "amp.publicUrl" $root) }}{{ $_ := set $server "public_url" . }}{{ end }}
{{- $dir := include "amp.secretsDir" $root }}
{{- $c = dict "server" $server "log" (dict "filter" $root.Values.log.filter "format" "json") "provider" (dict "key_file" (printf "%s/provider-key.pem" $dir) "pepper_file" (printf "%s/key-pepper" $dir)) "federation" (fromYaml (include "amp.federationConfig" $root)) }}
{{- else }}
{{- /* The cluster: one file for every binary (each reads its own sections). */}}
{{- $c = fromYaml (include "amp.commonConfig" $root) }}
{{- if $root.Values.federation.enabled }}
{{- /* ingest's built-in capability list (ingest::CAPABILITIES, services/ingest/src/lib.rs;
     a unit test there keeps this list equal to it) plus `federation`; delivery reads it too
     (remote recipients accepted on route frames). `attachments` is added by ingest itself
     where a blob store is configured. */}}
{{- $_ := set $c "capabilities" (list "registration" "relay-queue" "websockets" "webhooks" "notify:v1" "notify:longpoll" "attachments:afp" "agent-capabilities" "communication-policy" "agent-card" "federation") }}
{{- $_ := set $c "federation" (fromYaml (include "amp.federationConfig" $root)) }}
{{- end }}
{{- range (list "cluster" "ingest" "router" "delivery" "federation") }}
{{- $c = mustMergeOverwrite $c (deepCopy (get $root.Values.config . | default dict)) }}
{{- end }}
{{- end }}
{{- $extra := ternary (get $root.Values.config "ampd" | default dict) dict (eq .component "ampd") }}
{{- $c = mustMergeOverwrite $c (deepCopy $extra) }}
{{- /* Owner keys are secrets: issued by the admin API and stored hashed, never in a ConfigMap. */}}
{{- if (get (get $c "ingest" | default dict) "owners") }}
{{- fail "config: [[ingest.owners]] would put owner keys in a ConfigMap in plain text; enable `admin` and issue owner keys through the admin API (amp admin keys issue)" }}
{{- end }}
{{- /* Usage rows' retention: the values' days, unless `config` sets them. */}}
{{- $usageIngest := get $c "ingest" | default dict }}
{{- $retention := dict "usage_hourly_retention_days" (int $root.Values.usage.hourlyRetentionDays) "usage_daily_retention_days" (int $root.Values.usage.dailyRetentionDays) }}
{{- $_ := set $usageIngest "messaging" (mustMergeOverwrite $retention (get $usageIngest "messaging" | default dict)) }}
{{- $_ := set $c "ingest" $usageIngest }}
{{- if $root.Values.admin.enabled }}
{{- $ingest := get $c "ingest" | default dict }}
{{- $_ := set $ingest "admin" (mustMergeOverwrite (dict "listen" (printf "127.0.0.1:%d" (int $root.Values.admin.port))) (get $ingest "admin" | default dict)) }}
{{- $_ := set $c "ingest" $ingest }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/* Pod environment: OTLP endpoint, extraEnv, the component's env. */}}
{{- define "amp.env" -}}
{{- $root := .root }}
{{- with .component }}
{{- include "amp.natsAuthEnv" (dict "root" $root "component" .) }}
{{- end }}
{{- if and $root.Values.admin.enabled $root.Values.admin.bootstrapTokenSecret (has (.component | default "ampd") (list "ampd" "ingest")) }}
- name: AMP__INGEST__ADMIN__BOOTSTRAP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.admin.bootstrapTokenSecret | quote }}
      key: token
{{- end }}
{{- with $root.Values.otlp.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod annotations: config checksum (restart on change) and Prometheus scraping. */}}
{{- define "amp.podAnnotations" -}}
checksum/config: {{ include "amp.config" (dict "root" .root "component" .component) | sha256sum }}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: "8080"
prometheus.io/path: /metrics
{{- end }}
{{- with .podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The container's probes: alive is /healthz, ready (NATS or the store reachable) /readyz. */}}
{{- define "amp.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}
