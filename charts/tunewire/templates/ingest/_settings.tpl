{{/* Settings only ingest has, fixed by the chart (on top of ingest.env). None yet. */}}
{{- define "tunewire.ingest.env" -}}
{}
{{- end }}

{{/* Nothing ingest adds to the shared pod. */}}
{{- define "tunewire.ingest.pod" -}}
{}
{{- end }}
