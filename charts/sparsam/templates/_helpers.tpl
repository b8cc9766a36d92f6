{{- define "sparsam.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sparsam.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "sparsam.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sparsam.serviceAccountName" -}}
{{- default (include "sparsam.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "sparsam.labels" -}}
app.kubernetes.io/name: {{ include "sparsam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sparsam.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sparsam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "sparsam.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "sparsam.serverImage" -}}
{{- default (printf "%s:%s" .Values.operator.serverImageRepository (default .Chart.AppVersion .Values.image.tag)) .Values.operator.serverImage -}}
{{- end -}}

{{/* The annotation the activator sets to wake a service (sparsam.api.constants). */}}
{{- define "sparsam.wakeAnnotation" -}}
sparsam.dev/wake-requested-at
{{- end -}}

{{/* Non-empty when the cluster serves ValidatingAdmissionPolicies (Kubernetes >= 1.30), or
admissionPolicies is forced on. */}}
{{- define "sparsam.admissionPolicies" -}}
{{- if eq (toString .Values.admissionPolicies) "true" -}}
true
{{- else if and (eq (toString .Values.admissionPolicies) "auto") (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") -}}
true
{{- end -}}
{{- end -}}

{{/* A pod's scheduling fields: the component's own, else the chart-wide ones. */}}
{{- define "sparsam.scheduling" -}}
{{- $c := .component -}}
{{- with (default .root.Values.nodeSelector $c.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .root.Values.tolerations $c.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .root.Values.affinity $c.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .root.Values.priorityClassName $c.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{- define "sparsam.activatorName" -}}
{{- printf "%s-activator" (include "sparsam.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sparsam.activatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "sparsam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: activator
{{- end -}}
