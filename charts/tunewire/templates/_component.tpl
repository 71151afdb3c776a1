{{/*
One set of templates shared by every service. Each file under templates/<service>/ calls one
of these with (dict "root" $ "component" "<service>"); the service's values block has the same
keys for every service, and anything only one service needs comes from its own
templates/<service>/_settings.tpl: "tunewire.<service>.env" (its settings) and
"tunewire.<service>.pod" (what its pod adds to the shared one, as YAML: `env` and
`volumeMounts` of the service's container, more `containers` and `volumes`, the pod's
`strategy`, `nodeSelector` and `tolerations` in place of the shared ones, `ingress` rules
beyond the shared HTTP one and `egress` rules beyond DNS, Kafka and S3; `{}` for none).
*/}}

{{/* Settings every tunewire process reads, services and workload pods alike: where Kafka
and S3 are, the environment and the log level. Call with the root context; gives YAML. */}}
{{- define "tunewire.env.shared" -}}
{{- $g := .Values.global }}
{{- if and (eq $g.environment "production") (has $g.kafka.securityProtocol (list "PLAINTEXT" "SASL_PLAINTEXT")) (not $g.kafka.allowPlaintext) }}
{{- fail (printf "global.kafka.securityProtocol is %s: events and control messages would cross the network unencrypted. Production needs SASL_SSL or SSL (docs/security.md), or global.kafka.allowPlaintext: true to accept the risk." $g.kafka.securityProtocol) }}
{{- end }}
TUNEWIRE_ENVIRONMENT: {{ $g.environment | quote }}
TUNEWIRE_LOG_LEVEL: {{ $g.logLevel | quote }}
TUNEWIRE_KAFKA__BOOTSTRAP_SERVERS: {{ $g.kafka.bootstrapServers | quote }}
TUNEWIRE_KAFKA__SECURITY_PROTOCOL: {{ $g.kafka.securityProtocol | quote }}
{{- if $g.kafka.allowPlaintext }}
TUNEWIRE_KAFKA__ALLOW_PLAINTEXT: "true"
{{- end }}
{{- with $g.kafka.saslMechanism }}
TUNEWIRE_KAFKA__SASL_MECHANISM: {{ . | quote }}
{{- end }}
TUNEWIRE_S3__BUCKET: {{ $g.s3.bucket | quote }}
{{- with $g.s3.endpointUrl }}
TUNEWIRE_S3__ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with $g.s3.region }}
TUNEWIRE_S3__REGION: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The Kafka SASL user and password from global.kafka.sasl.existingSecret, as a container's
env entries; nothing without the Secret. Call with the root context. This and the list
helpers below give entries without a leading newline, for
`{{- with include "tunewire.env.kafkaSasl" $ }}{{ nindent 12 . }}{{ end }}`, which leaves no
blank line where they give nothing. */}}
{{- define "tunewire.env.kafkaSasl" -}}
{{- $sasl := .Values.global.kafka.sasl }}
{{- with $sasl.existingSecret -}}
- name: TUNEWIRE_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $sasl.usernameKey }}
- name: TUNEWIRE_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $sasl.passwordKey }}
{{- end }}
{{- end }}

{{/* The brokers' CA from global.kafka.tls.caSecret in a tunewire pod: the file
TUNEWIRE_KAFKA__SSL_CAFILE names, the container's mount and the pod's volume; each empty
without the Secret. Call with the root context. */}}
{{- define "tunewire.kafkaCa.file" -}}
{{- if .Values.global.kafka.tls.caSecret }}/etc/tunewire/kafka-ca/ca.crt{{ end }}
{{- end }}

{{- define "tunewire.kafkaCa.mount" -}}
{{- if .Values.global.kafka.tls.caSecret -}}
- name: kafka-ca
  mountPath: /etc/tunewire/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "tunewire.kafkaCa.volume" -}}
{{- $tls := .Values.global.kafka.tls }}
{{- with $tls.caSecret -}}
- name: kafka-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $tls.caKey }}
        path: ca.crt
{{- end }}
{{- end }}

{{/* Non-secret settings, exactly as the services read them (TUNEWIRE_*, `__` for groups). */}}
{{- define "tunewire.component.configmap" -}}
{{- $root := .root }}
{{- $svc := index $root.Values .component }}
{{- $g := $root.Values.global }}
{{- $env := include "tunewire.env.shared" $root | fromYaml }}
{{- $_ := set $env "TUNEWIRE_HTTP__PORT" (toString $svc.port) }}
{{- $_ := set $env "TUNEWIRE_KAFKA__SESSION_TIMEOUT_MS" (toString $g.kafka.sessionTimeoutMs) }}
{{- $_ := set $env "TUNEWIRE_KAFKA__HANDLER_ATTEMPTS" (toString $g.kafka.handlerAttempts) }}
{{- with include "tunewire.kafkaCa.file" $root }}{{ $_ := set $env "TUNEWIRE_KAFKA__SSL_CAFILE" . }}{{ end }}
{{- $env = merge (include (printf "tunewire.%s.env" .component) . | fromYaml) $env }}
{{- range $key, $value := $svc.env }}{{ $_ := set $env $key (toString $value) }}{{ end }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "tunewire.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tunewire.labels" . | nindent 4 }}
data:
  {{- range $key := keys $env | sortAlpha }}
  {{ $key }}: {{ index $env $key | quote }}
  {{- end }}
{{- end }}

{{/* Controllers (train, evaluate) differ in three ways: one replica replaced by Recreate,
so two never schedule against the same GPU budget; no autoscaling; and, with their Role, a
Kubernetes API token to launch Jobs with. */}}
{{- define "tunewire.component.deployment" -}}
{{- $root := .root }}
{{- $svc := index $root.Values .component }}
{{- $g := $root.Values.global }}
{{- $controller := include "tunewire.isController" . }}
{{- $pod := include (printf "tunewire.%s.pod" .component) . | fromYaml }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "tunewire.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tunewire.labels" . | nindent 4 }}
spec:
  {{- if or $controller (not $svc.autoscaling.enabled) }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "tunewire.selectorLabels" . | nindent 6 }}
  strategy:
    {{- if $pod.strategy }}
    {{- toYaml $pod.strategy | nindent 4 }}
    {{- else if $controller }}
    type: Recreate
    {{- else }}
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "tunewire.labels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include "tunewire.component.configmap" . | sha256sum }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "tunewire.serviceAccountName" . }}
      automountServiceAccountToken: {{ if and $controller $svc.rbac.create }}true{{ else }}false{{ end }}
      {{- with $g.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $g.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "tunewire.image" . }}
          imagePullPolicy: {{ $g.image.pullPolicy }}
          args: [{{ .component | quote }}]
          ports:
            - name: http
              containerPort: {{ $svc.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "tunewire.componentName" . }}
          env:
            - name: TUNEWIRE_PRINCIPALS
              valueFrom:
                secretKeyRef:
                  name: {{ $g.api.principals.existingSecret }}
                  key: {{ $g.api.principals.key }}
            {{- with include "tunewire.env.kafkaSasl" $root }}{{ nindent 12 . }}{{ end }}
            {{- with $g.s3.credentials.existingSecret }}
            - name: AWS_ACCESS_KEY_ID
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $g.s3.credentials.accessKeyIdKey }}
            - name: AWS_SECRET_ACCESS_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $g.s3.credentials.secretAccessKeyKey }}
            {{- end }}
            {{- with $pod.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $svc.probes.startup | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $svc.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml $svc.probes.readiness | nindent 12 }}
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          securityContext:
            {{- toYaml $g.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with include "tunewire.kafkaCa.mount" $root }}{{ nindent 12 . }}{{ end }}
            {{- with $pod.volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
        {{- with $pod.containers }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $svc.tmpSizeLimit }}
        {{- with include "tunewire.kafkaCa.volume" $root }}{{ nindent 8 . }}{{ end }}
        {{- with $pod.volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with (hasKey $pod "nodeSelector" | ternary $pod.nodeSelector $svc.nodeSelector) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (hasKey $pod "tolerations" | ternary $pod.tolerations $svc.tolerations) }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      affinity:
        {{- if $svc.affinity }}
        {{- toYaml $svc.affinity | nindent 8 }}
        {{- else }}
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "tunewire.selectorLabels" . | nindent 20 }}
        {{- end }}
{{- end }}

{{- define "tunewire.component.service" -}}
{{- $svc := index .root.Values .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "tunewire.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tunewire.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "tunewire.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $svc.port }}
      targetPort: http
      protocol: TCP
{{- end }}

{{- define "tunewire.component.serviceaccount" -}}
{{- $svc := index .root.Values .component }}
{{- if $svc.serviceAccount.create }}
{{- $annotations := merge (deepCopy $svc.serviceAccount.annotations) .root.Values.global.s3.serviceAccountAnnotations }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "tunewire.serviceAccountName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tunewire.labels" . | nindent 4 }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- with .root.Values.global.imagePullSecrets }}
{{- /* The Jobs' pods get pull secrets only from their service account. */}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tunewire.component.pdb" -}}
{{- $svc := index .root.Values .component }}
{{- if $svc.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tunewire.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tunewire.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $svc.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "tunewire.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{- define "tunewire.component.hpa" -}}
{{- $svc := index .root.Values .component }}
{{- if $svc.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "tunewire.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tunewire.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "tunewire.componentName" . }}
  minReplicas: {{ $svc.autoscaling.minReplicas }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage }}
    {{- with $svc.autoscaling.extraMetrics }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}

{{/* Allows on top of the release's default-deny: HTTP in from this release's pods, the
allowed namespaces and Prometheus, and what the service's pod adds (label's and train's from
evaluate's console); out only to DNS, Kafka and S3, for the controllers the Kubernetes API
(where they create and watch their Jobs), and what the service's pod adds (serve's model
hub, evaluate's console to label and train). */}}
{{- define "tunewire.component.networkpolicy" -}}
{{- $root := .root }}
{{- $svc := index $root.Values .component }}
{{- $np := $root.Values.global.networkPolicy }}
{{- $pod := include (printf "tunewire.%s.pod" .component) . | fromYaml }}
{{- if $np.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "tunewire.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tunewire.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "tunewire.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              {{- include "tunewire.releaseSelectorLabels" $root | nindent 14 }}
        - namespaceSelector:
            {{- toYaml $np.prometheusNamespaceSelector | nindent 12 }}
        {{- range $np.ingressNamespaceSelectors }}
        - namespaceSelector:
            {{- toYaml . | nindent 12 }}
        {{- end }}
      ports:
        - port: {{ $svc.port }}
          protocol: TCP
    {{- with $pod.ingress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $svc.networkPolicy.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  egress:
    {{- include "tunewire.egress.dns" $np | nindent 4 }}
    {{- include "tunewire.egress.peers" $np.kafka | nindent 4 }}
    {{- include "tunewire.egress.peers" $np.s3 | nindent 4 }}
    {{- if include "tunewire.isController" . }}
    {{- include "tunewire.egress.peers" $np.kubernetesApi | nindent 4 }}
    {{- end }}
    {{- with $pod.egress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $np.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}

{{- define "tunewire.egress.dns" -}}
- to:
    - namespaceSelector:
        {{- toYaml .dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .dns.podSelector | nindent 8 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/* An egress rule to some ports, optionally only towards the given peers. */}}
{{- define "tunewire.egress.peers" -}}
- ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Gated on the Prometheus Operator's API so a cluster without it still installs. */}}
{{- define "tunewire.component.servicemonitor" -}}
{{- $root := .root }}
{{- $svc := index $root.Values .component }}
{{- $sm := $svc.metrics.serviceMonitor }}
{{- if and $sm.enabled ($root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "tunewire.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tunewire.labels" . | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "tunewire.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames: [{{ $root.Release.Namespace }}]
  endpoints:
    - port: http
      path: /metrics
      interval: {{ $sm.interval }}
      scheme: http
{{- end }}
{{- end }}
