{{/*
Names, labels and images shared by every template. Kubernetes names and label values are
limited to 63 characters, so every name is truncated and stripped of a trailing dash.
*/}}

{{/* The services this chart deploys, in order. */}}
{{- define "tunewire.services" -}}
ingest label train evaluate serve
{{- end }}

{{/* The services that launch workload Jobs through the Kubernetes API: one replica each,
the only ones with a Kubernetes API token and a Role. */}}
{{- define "tunewire.controllers" -}}
train evaluate
{{- end }}

{{/* Whether a component is a controller. Call with (dict "root" $ "component" "train"). */}}
{{- define "tunewire.isController" -}}
{{- if has .component (splitList " " (include "tunewire.controllers" .root)) }}true{{ end }}
{{- end }}

{{/* Whether any enabled controller launches workloads, so their service account, settings
and Roles are needed. */}}
{{- define "tunewire.workloads.enabled" -}}
{{- range splitList " " (include "tunewire.controllers" .) }}
{{- if (index $.Values .).enabled }}true{{ end }}
{{- end }}
{{- end }}

{{- define "tunewire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* RELEASE-tunewire, or just RELEASE when it already contains the chart name. */}}
{{- define "tunewire.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* FULLNAME-COMPONENT; the prefix gives way first so the component stays readable.
Call with (dict "root" $ "component" "ingest"). */}}
{{- define "tunewire.componentName" -}}
{{- $prefix := include "tunewire.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods. Selectors are immutable: only name, instance
and component, never version. Call with (dict "root" $ "component" "ingest"). */}}
{{- define "tunewire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tunewire.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of every object. Call with (dict "root" $ "component" "ingest"). */}}
{{- define "tunewire.labels" -}}
{{ include "tunewire.selectorLabels" . }}
app.kubernetes.io/part-of: tunewire
app.kubernetes.io/version: {{ include "tunewire.imageTag" (dict "root" .root "component" .component) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Labels shared by every pod of the release (used by the default-deny policy). */}}
{{- define "tunewire.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "tunewire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The image tag of a component: a service's (or the workloads') own, else the global
one, else appVersion. Also the version label of the component's objects. */}}
{{- define "tunewire.imageTag" -}}
{{- $own := "" }}
{{- if or (has .component (splitList " " (include "tunewire.services" .root))) (eq .component "workloads") }}
{{- $own = (index .root.Values .component).image.tag }}
{{- end }}
{{- $own | default .root.Values.global.image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{/* registry/repository:tag of a component's image (a service's, or "workloads" for the
trainer image). */}}
{{- define "tunewire.image" -}}
{{- $svc := index .root.Values .component }}
{{- $g := .root.Values.global.image }}
{{- $registry := $svc.image.registry | default $g.registry }}
{{- $repository := $svc.image.repository | default $g.repository }}
{{- include "tunewire.imageRef" (dict "registry" $registry "repository" $repository "tag" (include "tunewire.imageTag" .)) }}
{{- end }}

{{/* registry/repository:tag, or repository:tag without a registry. Call with a dict (or an
image block of values) holding registry, repository and tag. */}}
{{- define "tunewire.imageRef" -}}
{{- if .registry }}
{{- printf "%s/%s:%s" .registry .repository .tag }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{/* A node selector as `key=value,...`, for people to read. Call with the map. */}}
{{- define "tunewire.nodeLabels" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* The service account a component (a service, or "workloads") runs as. */}}
{{- define "tunewire.serviceAccountName" -}}
{{- $svc := index .root.Values .component }}
{{- if $svc.serviceAccount.create }}
{{- $svc.serviceAccount.name | default (include "tunewire.componentName" .) }}
{{- else }}
{{- $svc.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}
