"""Static checks of what ships for Kubernetes: the Helm chart, the kustomize base, the
Grafana dashboards and the Dockerfiles. No cluster and no Docker daemon: real tools
(Helm's engine, Kubernetes' schemas, yamllint, promtool) read the files."""

DEPLOY_EXTRA = "needs the deploy extra: pip install -e '.[test,deploy]'"
