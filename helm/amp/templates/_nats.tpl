{{/*
The bundled NATS (nats.enabled): its users, their permissions and where their passwords come
from. The templates marked "(nats chart)" are rendered inside the nats subchart, through its
`$tplYaml`/`$tplYamlSpread` values (see values.yaml, nats.config.merge and
nats.container.env): there `.Values` is the subchart's values, i.e. this chart's `nats:` map
(`.Values.auth`, `.Values.prefix`, ...), so they read nothing else.
*/}}

{{/* The services that log in to NATS, each as its own user. */}}
{{- define "amp.natsServices" -}}
{{- toJson (list "ingest" "router" "delivery" "federation") }}
{{- end }}

{{/*
What each service may publish and subscribe to on NATS: the same permissions as
deploy/nats/auth.conf (read its comments for why each is there). Keep the two equal: the test
`security_chart_bundled_nats_permissions_equal_deploy_auth_conf` runs one nats-server with each
and compares what every user is allowed and refused. `amp.` subjects get `<nats.prefix>.` in
front when a prefix is set.
*/}}
{{- define "amp.natsPermissions" -}}
ingest:
  publish:
    allow: ["amp.>", "$JS.API.>", "$JS.ACK.>", "$KV.>", "_INBOX.>"]
    deny: ["amp.federation.>"]
  subscribe:
    allow: ["amp.>", "_INBOX.>"]
router:
  publish:
    allow: ["amp.mbox.>", "amp.mboxp.>", "amp.rcpt.>", "amp.notify.>", "amp.delivered.>", "amp.registry.>",
            "amp.reply.>", "amp.dlq.>", "amp.federation.>",
            "$JS.API.>", "$JS.ACK.>", "$KV.>", "_INBOX.>"]
  subscribe:
    allow: ["amp.>", "_INBOX.>"]
delivery:
  publish:
    allow: ["amp.>", "$JS.API.>", "$JS.ACK.>", "$KV.>", "_INBOX.>"]
    deny: ["amp.federation.>"]
  subscribe:
    allow: ["amp.>", "_INBOX.>"]
federation:
  publish:
    allow: ["amp.>", "$JS.API.>", "$JS.ACK.>", "$KV.>", "_INBOX.>"]
    deny: ["amp.federation.>"]
  subscribe:
    allow: ["amp.>", "_INBOX.>"]
{{- end }}

{{/* Why the bundled NATS refuses a login mode other than password. */}}
{{- define "amp.natsBundledModeError" -}}
{{- printf "nats.enabled: the bundled NATS logs each service in by its password (nats.auth.mode empty or password), not %q: " . }}
{{- if eq . "none" }}none would run it open to every pod that reaches it (every mailbox readable, any message publishable as verified)
{{- else }}{{ . }} needs a NATS you configure yourself (nats.enabled=false and nats.urls, see deploy/nats){{ end }}
{{- end }}

{{/* The nats-server variable holding a service's password: AMP_NATS_INGEST_PASSWORD, ... */}}
{{- define "amp.natsPasswordVar" -}}
{{- printf "AMP_NATS_%s_PASSWORD" (upper .) }}
{{- end }}

{{/*
The Secret holding the services' NATS credentials (one key per service): nats.auth.existingSecret,
or with nats.enabled and nats.auth.generate the one this chart generates. Named from the
release alone, so the nats subchart computes the same name: (dict "auth" <nats.auth> "release"
.Release.Name).
*/}}
{{- define "amp.natsAuthSecret" -}}
{{- default (printf "%s-amp-nats-auth" .release) .auth.existingSecret | trunc 253 }}
{{- end }}

{{/* How the services log in: nats.auth.mode, or when empty `password` with the bundled NATS
     and `none` without: (dict "auth" <nats.auth> "enabled" <nats.enabled>). */}}
{{- define "amp.natsAuthModeOf" -}}
{{- .auth.mode | default (ternary "password" "none" (.enabled | default false)) }}
{{- end }}

{{/*
(nats chart) The accounts block of the bundled NATS: account AMP with JetStream, one user per
service with its permissions, each password a nats-server variable resolved from the
container's environment (amp.natsServerEnv), never written in the ConfigMap.
*/}}
{{- define "amp.natsServerAccounts" -}}
{{- $auth := .Values.auth }}
{{- $mode := include "amp.natsAuthModeOf" (dict "auth" $auth "enabled" true) }}
{{- if ne $mode "password" }}
{{- fail (include "amp.natsBundledModeError" $mode) }}
{{- end }}
{{- $prefix := .Values.prefix | default "" }}
{{- $perms := include "amp.natsPermissions" . | fromYaml }}
{{- $users := list }}
{{- range $svc := include "amp.natsServices" . | fromJsonArray }}
{{- $p := dict }}
{{- range $dir, $rules := get $perms $svc }}
{{- $d := dict }}
{{- range $kind, $subjects := $rules }}
{{- $out := list }}
{{- range $subjects }}
{{- if and $prefix (hasPrefix "amp." .) }}{{ $out = append $out (printf "%s.%s" $prefix .) }}{{ else }}{{ $out = append $out . }}{{ end }}
{{- end }}
{{- $_ := set $d $kind $out }}
{{- end }}
{{- $_ := set $p $dir $d }}
{{- end }}
{{- $user := required (printf "nats.auth.users.%s is required" $svc) (get $auth.users $svc) }}
{{- $users = append $users (dict "user" $user "password" (printf "<< $%s >>" (include "amp.natsPasswordVar" $svc)) "permissions" $p) }}
{{- end }}
{{- toYaml (dict "AMP" (dict "jetstream" "enabled" "users" $users)) }}
{{- end }}

{{/* (nats chart) The nats container's environment: each service's password from its key of
     the Secret the services read theirs from. */}}
{{- define "amp.natsServerEnv" -}}
{{- $secret := include "amp.natsAuthSecret" (dict "auth" .Values.auth "release" .Release.Name) }}
{{- $env := dict }}
{{- range $svc := include "amp.natsServices" . | fromJsonArray }}
{{- $_ := set $env (include "amp.natsPasswordVar" $svc) (dict "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" $svc))) }}
{{- end }}
{{- toYaml $env }}
{{- end }}
