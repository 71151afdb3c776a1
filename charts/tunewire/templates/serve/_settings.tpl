{{/*
serve's pod: the serve container (the shared one) and vLLM beside it, scaled as one unit.
vLLM listens on 127.0.0.1 only, so nothing but its own serve container can reach it; the
serve container syncs approved adapters from S3 into a volume both mount at the same path
and asks vLLM to load them from there (/v1/load_lora_adapter). The pod is ready when both
are: vLLM's /health, and serve's /readyz (every champion loaded, or refused for bad files).
*/}}

{{/* Where adapters are synced to: the serve default, and the same path in both containers
(vLLM loads them by path). */}}
{{- define "tunewire.serve.adaptersDir" -}}
/var/lib/tunewire/adapters
{{- end }}

{{/* vLLM's port on the pod's loopback interface. */}}
{{- define "tunewire.serve.vllmPort" -}}
8000
{{- end }}

{{/* Where serve relays vLLM's own /metrics on its port (serve.vllm.metrics): only that one
read-only path of vLLM's API leaves the pod, and vLLM stays on loopback. */}}
{{- define "tunewire.serve.vllmMetricsPath" -}}
/metrics/vllm
{{- end }}

{{/* The scrape job of vLLM's metrics: the Service's name (serve's own job) plus -vllm, so
that its targets differ from serve's (same pod and port, another path) and the alerts on
serve's job (TunewireTargetDown, TunewireServiceDown) keep meaning serve. */}}
{{- define "tunewire.serve.vllmMetricsJob" -}}
{{- printf "%s-vllm" (include "tunewire.componentName" (dict "root" .root "component" "serve")) }}
{{- end }}

{{/* The ServiceMonitor endpoint of vLLM's metrics, on serve's port and scrape interval. */}}
{{- define "tunewire.serve.vllmMetricsEndpoint" -}}
port: http
path: {{ include "tunewire.serve.vllmMetricsPath" . }}
interval: {{ .root.Values.serve.metrics.serviceMonitor.interval }}
scheme: http
relabelings:
  - action: replace
    targetLabel: job
    replacement: {{ include "tunewire.serve.vllmMetricsJob" . }}
{{- end }}

{{/* Settings only serve has, fixed by the chart: the vLLM backend in the same pod, the
name of its base model, where adapters go, and what a request may ask for. The adapters
serve keeps loaded are exactly vLLM's CPU cache (--max-cpu-loras): beyond it vLLM would evict
and reload adapters behind serve's back. */}}
{{- define "tunewire.serve.env" -}}
{{- $s := .root.Values.serve }}
TUNEWIRE_SERVE__BACKEND: vllm
TUNEWIRE_SERVE__BASE_NAME: {{ $s.baseName | quote }}
TUNEWIRE_SERVE__ADAPTERS_DIR: {{ include "tunewire.serve.adaptersDir" . | quote }}
TUNEWIRE_SERVE__MAX_ADAPTERS: {{ $s.vllm.maxCpuLoras | int | quote }}
TUNEWIRE_SERVE__MAX_PROMPT_CHARS: {{ $s.limits.maxPromptChars | int | quote }}
TUNEWIRE_SERVE__MAX_OUTPUT_TOKENS: {{ $s.limits.maxOutputTokens | int | quote }}
TUNEWIRE_SERVE__RECONCILE_EVERY_S: {{ $s.limits.reconcileEverySeconds | toString | quote }}
TUNEWIRE_VLLM__BASE_URL: {{ printf "http://127.0.0.1:%s" (include "tunewire.serve.vllmPort" .) | quote }}
{{- end }}

{{/* What serve's pod adds to the shared one (see _component.tpl): vLLM's Secrets, the adapter volume, the vLLM container and its volumes, GPU scheduling, a rolling
update that fits the GPUs there are, and egress to the model hub when vLLM downloads from it. */}}
{{- define "tunewire.serve.pod" -}}
{{- $s := .root.Values.serve }}
{{- $v := $s.vllm }}
{{- if lt (int $v.maxCpuLoras) (int $v.maxLoras) }}
{{- fail (printf "serve.vllm.maxCpuLoras (%d) must be at least serve.vllm.maxLoras (%d): vLLM refuses to start otherwise" (int $v.maxCpuLoras) (int $v.maxLoras)) }}
{{- end }}
{{- if ge (int $v.drainSeconds) (int $s.terminationGracePeriodSeconds) }}
{{- fail (printf "serve.vllm.drainSeconds (%d) must be below serve.terminationGracePeriodSeconds (%d): vLLM must outlive the requests serve finishes, and the pod must end before it is killed" (int $v.drainSeconds) (int $s.terminationGracePeriodSeconds)) }}
{{- end }}
{{- $env := list }}
{{- with $v.apiKey.existingSecret }}
{{- $env = append $env (dict "name" "TUNEWIRE_VLLM__API_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" . "key" $v.apiKey.key))) }}
{{- end }}
strategy:
  type: RollingUpdate
  rollingUpdate:
    {{- toYaml $s.rollingUpdate | nindent 4 }}
nodeSelector: {{ $v.nodeSelector | default dict | toJson }}
tolerations: {{ $v.tolerations | default list | toJson }}
env: {{ toJson $env }}
egress:
  {{- if $v.huggingFaceHub.enabled }}
  {{- include "tunewire.egress.peers" $v.huggingFaceHub | nindent 2 }}
  {{- end }}
volumeMounts:
  - name: adapters
    mountPath: {{ include "tunewire.serve.adaptersDir" . }}
containers:
  - {{- include "tunewire.serve.vllm" . | nindent 4 }}
volumes:
  - name: adapters
    emptyDir:
      sizeLimit: {{ $s.adapters.sizeLimit }}
  - name: models
    {{- with $v.modelCache.existingClaim }}
    persistentVolumeClaim:
      claimName: {{ . }}
    {{- else }}
    emptyDir:
      sizeLimit: {{ $v.modelCache.sizeLimit }}
    {{- end }}
  - name: vllm-home
    emptyDir:
      sizeLimit: {{ $v.homeSizeLimit }}
  - name: vllm-tmp
    emptyDir:
      sizeLimit: {{ $v.tmpSizeLimit }}
  - name: dshm
    emptyDir:
      medium: Memory
      sizeLimit: {{ $v.shmSizeLimit }}
{{- end }}

{{/* An exec probe of vLLM's /health: vLLM listens on the pod's loopback, which the kubelet's
HTTP probes (sent to the pod IP) cannot reach. Call with (dict "timing" <probe values>). */}}
{{- define "tunewire.serve.vllmProbe" -}}
exec:
  command:
    - python3
    - -c
    - {{ printf "import urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health', timeout=%d)" (include "tunewire.serve.vllmPort" .) (int .timing.timeoutSeconds) | quote }}
{{ toYaml .timing }}
{{- end }}

{{/* The vLLM container: the official OpenAI-compatible image serving values.serve.vllm.model
under the base name, with runtime LoRA loading, on the pod's loopback only. */}}
{{- define "tunewire.serve.vllm" -}}
{{- $s := .root.Values.serve }}
{{- $v := $s.vllm }}
{{- $port := include "tunewire.serve.vllmPort" . }}
{{- $gpus := $v.gpu.count | int | toString }}
{{- $resources := deepCopy $v.resources }}
{{- $_ := set $resources.requests $v.gpu.resource $gpus }}
{{- $_ := set $resources.limits $v.gpu.resource $gpus }}
name: vllm
image: {{ include "tunewire.imageRef" $v.image | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
command: [vllm, serve]
args:
  - {{ $v.model | quote }}
  - --served-model-name
  - {{ $s.baseName | quote }}
  - --enable-lora
  - --max-loras
  - {{ $v.maxLoras | int | quote }}
  - --max-lora-rank
  - {{ $v.maxLoraRank | int | quote }}
  - --max-cpu-loras
  - {{ $v.maxCpuLoras | int | quote }}
  - --tensor-parallel-size
  - {{ $gpus | quote }}
  - --host
  - 127.0.0.1
  - --port
  - {{ $port | quote }}
  {{- range $v.extraArgs }}
  - {{ . | quote }}
  {{- end }}
env:
  {{- /* /v1/load_lora_adapter and /v1/unload_lora_adapter exist only with this. */}}
  - name: VLLM_ALLOW_RUNTIME_LORA_UPDATING
    value: "True"
  - name: VLLM_NO_USAGE_STATS
    value: "1"
  - name: DO_NOT_TRACK
    value: "1"
  - name: HOME
    value: /home/vllm
  - name: HF_HOME
    value: /models/huggingface
  {{- if $v.huggingFaceHub.enabled }}
  {{- with $v.huggingFaceHub.endpoint }}
  - name: HF_ENDPOINT
    value: {{ . | quote }}
  {{- end }}
  {{- else }}
  - name: HF_HUB_OFFLINE
    value: "1"
  {{- end }}
  {{- with $v.hfToken.existingSecret }}
  - name: HF_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: {{ $v.hfToken.key }}
  {{- end }}
  {{- with $v.apiKey.existingSecret }}
  - name: VLLM_API_KEY
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: {{ $v.apiKey.key }}
  {{- end }}
  {{- range $key, $value := $v.env }}
  - name: {{ $key }}
    value: {{ $value | toString | quote }}
  {{- end }}
startupProbe:
  {{- include "tunewire.serve.vllmProbe" (dict "timing" $v.probes.startup) | nindent 2 }}
livenessProbe:
  {{- include "tunewire.serve.vllmProbe" (dict "timing" $v.probes.liveness) | nindent 2 }}
readinessProbe:
  {{- include "tunewire.serve.vllmProbe" (dict "timing" $v.probes.readiness) | nindent 2 }}
{{- /* Both containers get SIGTERM together; vLLM waits so that the requests serve is
finishing still reach it. */}}
lifecycle:
  preStop:
    exec:
      command: [sleep, {{ $v.drainSeconds | int | quote }}]
resources:
  {{- toYaml $resources | nindent 2 }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: adapters
    mountPath: {{ include "tunewire.serve.adaptersDir" . }}
    readOnly: true
  - name: models
    mountPath: /models
    {{- /* Without the hub nothing is downloaded: the claim holds the model, read only. */}}
    readOnly: {{ not $v.huggingFaceHub.enabled }}
  - name: vllm-home
    mountPath: /home/vllm
  - name: vllm-tmp
    mountPath: /tmp
  - name: dshm
    mountPath: /dev/shm
{{- end }}
