"""Test harness standing in for the kubelet and the cluster network (test code only).

kwok's fake nodes make pods Ready without running them. For end-to-end tests the harness
runs, for every Ready pod of a ModelDeployment, one real `modelserver` process with that
pod's environment (`pods.PodMirror`), registers it with a real Prometheus through
file-based discovery with the namespace and pod labels Kubernetes discovery would add
(`prometheus.RealPrometheus`), and sends requests the way the client Service would:
spread evenly over the serving pods of both tracks (`load.Load`).
"""
