{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name alone when it already holds the chart's. */}}
{{- define "modeldeploy.fullname" -}}
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

{{- define "modeldeploy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every object of the release. */}}
{{- define "modeldeploy.labels" -}}
helm.sh/chart: {{ include "modeldeploy.chart" . }}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modeldeploy
{{- end }}

{{/* Labels that select the operator's pods; never change them between upgrades. */}}
{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modeldeploy.leaseName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "modeldeploy.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The watched namespaces, deduplicated, in the order given. */}}
{{- define "modeldeploy.watchNamespaces" -}}
{{- uniq (.Values.watchNamespaces | default list) | toJson }}
{{- end }}

{{/*
Rules for the namespaced objects the operator reads and writes: its own ModelDeployments,
their children, the Secrets they name and the Events it records. Used by the ClusterRole
(every namespace) or by one Role per watched namespace.
*/}}
{{- define "modeldeploy.namespacedRules" -}}
- apiGroups: ["modeldeploy.dev"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["modeldeploy.dev"]
  resources: ["modeldeployments/status"]
  verbs: ["get", "patch", "update"]
# Children carry ownerReferences with blockOwnerDeletion, which needs this where the
# OwnerReferencesPermissionEnforcement admission plugin is on.
- apiGroups: ["modeldeploy.dev"]
  resources: ["modeldeployments/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes", "grpcroutes"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# spec.autoscaling: an HPA sizes the stable Deployment.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "create", "patch", "delete"]
# The offline check of a new revision (spec.validation) runs as a Job the operator applies
# and reads; finished Jobs go by their TTL and with their ModelDeployment.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create", "patch"]
# strategy.shadow: NAME-mirror tells the stable pods where to copy live requests.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
# Canary pods that never become ready: their container statuses say why (status, Event).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
{{- if .Values.secretAccess.enabled }}
# Prometheus bearer token and CA, webhook URL: read by name only, never listed. With
# analysis.quality or monitoring.quality the operator creates NAME-feedback, the key that
# signs prediction tokens (never read back, never rewritten).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
{{- end }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
