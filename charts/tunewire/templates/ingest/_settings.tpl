{{/* Settings only ingest has, fixed by the chart (on top of ingest.env). None yet. */}}
{{- define "tunewire.ingest.env" -}}
{}
{{- end }}
