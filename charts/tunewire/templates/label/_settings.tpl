{{/* Settings only label has, fixed by the chart: snapshot files are staged on the /tmp
emptyDir, as the root filesystem is read-only. */}}
{{- define "tunewire.label.env" -}}
TUNEWIRE_LABEL__WORKDIR: /tmp/tunewire
{{- end }}

{{/* What label adds to the shared pod: ingress from evaluate's pods for the console's
overview (_console.tpl). */}}
{{- define "tunewire.label.pod" -}}
ingress:
  {{- include "tunewire.console.ingress" . | trim | nindent 2 }}
{{- end }}
