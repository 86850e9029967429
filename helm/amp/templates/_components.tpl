{{/* The components of mode cluster and their values: a list of (dict "name" "values"). */}}
{{- define "amp.components" -}}
{{- $c := list (dict "name" "ingest" "values" .Values.ingest) (dict "name" "router" "values" .Values.router) (dict "name" "delivery" "values" .Values.delivery) }}
{{- if .Values.federation.enabled }}
{{- $c = append $c (dict "name" "federation" "values" .Values.federationService) }}
{{- end }}
{{- toJson $c }}
{{- end }}
