# Operator shortcuts; each target is one documented command.
IMAGE ?= ghcr.io/acgan-ensemble/acgan-ensemble:0.1.0
OVERLAY ?= standalone

.PHONY: image push manifests deploy pipeline test

image:  ## build the one image every pipeline component runs in
	docker build -f images/Dockerfile -t $(IMAGE) .

push: image
	docker push $(IMAGE)

manifests:  ## render an overlay (needs manifests/base/core/store.env; with components/bundled-minio, base/minio/minio-root.env)
	kubectl kustomize manifests/overlays/$(OVERLAY)

deploy:
	kubectl apply -k manifests/overlays/$(OVERLAY)

pipeline:  ## compile the pipeline for this image, to upload in the KFP UI
	acgan compile --image $(IMAGE) -o acgan-ensemble.yaml

test:
	python -m pytest
