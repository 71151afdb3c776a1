{{/* Settings only label has, fixed by the chart: snapshot files are staged on the /tmp
emptyDir, as the root filesystem is read-only. */}}
{{- define "tunewire.label.env" -}}
TUNEWIRE_LABEL__WORKDIR: /tmp/tunewire
{{- end }}

{{/* Nothing label adds to the shared pod. */}}
{{- define "tunewire.label.pod" -}}
{}
{{- end }}
