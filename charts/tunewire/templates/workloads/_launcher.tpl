{{/*
How train and evaluate launch their Jobs: the values of the `workloads` block, as the
controllers' TUNEWIRE_LAUNCHER__* settings (services/tunewire/core/launching.py). The
launcher (core/kubejobs.py) builds each Job from them: the restricted security context,
read-only root filesystem, emptyDirs for /tmp and the model cache, and no API token are its
own, not settings. The release's selector labels go on every Job and its pods, so the
release's NetworkPolicies select them, and they scope each launcher to its own release's
Jobs. The Kafka CA Secret the services mount (global.kafka.tls) is mounted into the Jobs too.
*/}}

{{/* Settings of a controller's launcher, as YAML. Numbers go through `int` so large ones
never print in exponent form. Call with the root context. */}}
{{- define "tunewire.launcher.env" -}}
{{- $w := .Values.workloads }}
{{- $workloads := dict "root" . "component" "workloads" }}
TUNEWIRE_LAUNCHER__KIND: kubernetes
TUNEWIRE_LAUNCHER__KUBERNETES__NAMESPACE: {{ .Release.Namespace | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__IMAGE: {{ include "tunewire.image" $workloads | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__IMAGE_PULL_POLICY: {{ $w.image.pullPolicy | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__SERVICE_ACCOUNT: {{ include "tunewire.serviceAccountName" $workloads | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__CONFIG_MAP: {{ include "tunewire.componentName" $workloads | quote }}
{{- with $w.credentials.existingSecret }}
TUNEWIRE_LAUNCHER__KUBERNETES__SECRET: {{ . | quote }}
{{- end }}
TUNEWIRE_LAUNCHER__KUBERNETES__LABELS: {{ include "tunewire.releaseSelectorLabels" . | fromYaml | toJson | quote }}
{{- with .Values.global.kafka.tls.caSecret }}
TUNEWIRE_LAUNCHER__KUBERNETES__CA_SECRET: {{ . | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__CA_KEY: {{ $.Values.global.kafka.tls.caKey | quote }}
{{- end }}
TUNEWIRE_LAUNCHER__KUBERNETES__GPU_RESOURCE: {{ $w.gpu.resource | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__NODE_SELECTOR: {{ $w.nodeSelector | default dict | toJson | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__TOLERATIONS: {{ $w.tolerations | default list | toJson | quote }}
{{- with $w.priorityClassName }}
TUNEWIRE_LAUNCHER__KUBERNETES__PRIORITY_CLASS: {{ . | quote }}
{{- end }}
TUNEWIRE_LAUNCHER__KUBERNETES__CPU_REQUEST: {{ $w.resources.requests.cpu | toString | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__MEMORY_REQUEST: {{ $w.resources.requests.memory | toString | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__MEMORY_LIMIT: {{ $w.resources.limits.memory | toString | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__ACTIVE_DEADLINE_SECONDS: {{ $w.activeDeadlineSeconds | int | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__BACKOFF_LIMIT: {{ $w.backoffLimit | int | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__TTL_SECONDS_AFTER_FINISHED: {{ $w.ttlSecondsAfterFinished | int | quote }}
TUNEWIRE_LAUNCHER__KUBERNETES__PENDING_TIMEOUT_S: {{ $w.pendingTimeoutSeconds | toString | quote }}
{{- end }}
