{{/*
The console's pipeline overview (evaluate's /console/overview) fills its queue, snapshot and
training columns by asking label's and train's HTTP APIs, server-side, with the caller's
token. While evaluate.console.enabled, evaluate gets their in-cluster Service URLs
(TUNEWIRE_CONSOLE__PEERS), its pods may reach their pods on their HTTP ports, and their
policies admit evaluate's pods on those ports; nothing else. A peer that is not deployed is
left out everywhere, and the overview shows it as not configured.
*/}}

{{/* The services the overview asks, by the names ConsoleSettings.peers expects. */}}
{{- define "tunewire.console.services" -}}
label train
{{- end }}

{{/* The peers wired in this release, space-separated (empty when the console is off or
evaluate is not deployed). Call with the root context. */}}
{{- define "tunewire.console.peers" -}}
{{- if and .Values.evaluate.enabled .Values.evaluate.console.enabled }}
{{- $peers := list }}
{{- range $name := splitList " " (include "tunewire.console.services" .) }}
{{- if (index $.Values $name).enabled }}{{ $peers = append $peers $name }}{{ end }}
{{- end }}
{{- join " " $peers }}
{{- end }}
{{- end }}

{{/* evaluate's TUNEWIRE_CONSOLE__PEERS (a JSON object of Service URLs), as YAML; nothing
without peers. Call with the root context. */}}
{{- define "tunewire.console.env" -}}
{{- $urls := dict }}
{{- range $name := include "tunewire.console.peers" . | splitList " " | compact }}
{{- $peer := dict "root" $ "component" $name }}
{{- $_ := set $urls $name (printf "http://%s.%s.svc:%v" (include "tunewire.componentName" $peer) $.Release.Namespace (index $.Values $name).port) }}
{{- end }}
{{- with $urls }}
TUNEWIRE_CONSOLE__PEERS: {{ toJson . | quote }}
{{- end }}
{{- end }}

{{/* evaluate's egress to each peer's pods on the peer's HTTP port, as a YAML list (empty
without peers). Call with the root context. */}}
{{- define "tunewire.console.egress" -}}
{{- range $name := include "tunewire.console.peers" . | splitList " " | compact }}
- to:
    - podSelector:
        matchLabels:
          {{- include "tunewire.selectorLabels" (dict "root" $ "component" $name) | nindent 10 }}
  ports:
    - port: {{ (index $.Values $name).port }}
      protocol: TCP
{{- end }}
{{- end }}

{{/* A peer's ingress from evaluate's pods on the peer's own HTTP port, as a YAML list
(empty when the component is not a wired peer). Call with (dict "root" $ "component" "label"). */}}
{{- define "tunewire.console.ingress" -}}
{{- if has .component (include "tunewire.console.peers" .root | splitList " ") }}
- from:
    - podSelector:
        matchLabels:
          {{- include "tunewire.selectorLabels" (dict "root" .root "component" "evaluate") | nindent 10 }}
  ports:
    - port: {{ (index .root.Values .component).port }}
      protocol: TCP
{{- end }}
{{- end }}
