# Operator shortcuts; each target is one documented command.
# REGISTRY/acgan-ensemble:TAG, one your cluster pulls: no image is published, so there is no default.
IMAGE ?=
need-image = $(if $(IMAGE),,$(error give IMAGE=REGISTRY/acgan-ensemble:TAG, the image your cluster pulls))
OVERLAY ?= standalone

.PHONY: image push manifests deploy pipeline test

image:  ## build the one image every pipeline component runs in
	$(need-image)
	docker build -f images/Dockerfile -t $(IMAGE) .

push: image
	docker push $(IMAGE)

manifests:  ## render an overlay (needs manifests/base/core/store.env; with components/bundled-minio, base/minio/minio-root.env)
	kubectl kustomize manifests/overlays/$(OVERLAY)

deploy:
	kubectl apply -k manifests/overlays/$(OVERLAY)

pipeline:  ## compile the pipeline for this image, to upload in the KFP UI
	$(need-image)
	acgan compile --image $(IMAGE) -o acgan-ensemble.yaml

test:
	python -m pytest
