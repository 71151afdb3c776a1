"""Tests of the Helm chart, the plain manifests in k8s/ and the renderer that makes them."""
