#!/usr/bin/env bash
# GKE set-up for steam_ray: cluster, node pools, KubeRay, bucket, identity, image, manifests.
#
#   cluster/gke.sh [--dry-run] up            cluster + CPU/GPU pools + KubeRay + bucket + identity
#   cluster/gke.sh [--dry-run] build         build and push the image (Artifact Registry)
#   cluster/gke.sh [--dry-run] apply FILE..  apply cluster/*.yaml with this project's image/bucket
#   cluster/gke.sh [--dry-run] down          delete the cluster, identity and registry (bucket kept)
#
# --dry-run (or DRY_RUN=1) prints every command instead of running it. Settings (environment):
#   PROJECT (required)  REGION=us-central1  ZONE=us-central1-a  CLUSTER=steam-ray
#   BUCKET=steam-ray-data  NAMESPACE=default  TAG=0.1.0  KUBERAY=helm|addon  KUBERAY_VERSION=1.7.0
#   WANDB_API_KEY (optional: stored in the Secret steam-ray-wandb, never printed)
set -euo pipefail

DRY_RUN=${DRY_RUN:-0}
if [[ ${1:-} == --dry-run ]]; then
    DRY_RUN=1
    shift
fi
ACTION=${1:-}
[[ -n $ACTION ]] || { sed -n '2,13p' "$0"; exit 2; }
shift

PROJECT=${PROJECT:?set PROJECT to your Google Cloud project id}
REGION=${REGION:-us-central1}
ZONE=${ZONE:-us-central1-a}
CLUSTER=${CLUSTER:-steam-ray}
BUCKET=${BUCKET:-steam-ray-data}
NAMESPACE=${NAMESPACE:-default}
TAG=${TAG:-0.1.0}
KUBERAY=${KUBERAY:-helm}
# Pinned operator chart; its CRDs are the schemas the manifests are validated against in CI.
KUBERAY_VERSION=${KUBERAY_VERSION:-1.7.0}
GSA=steam-ray
KSA=steam-ray
GSA_EMAIL="$GSA@$PROJECT.iam.gserviceaccount.com"
REGISTRY="$REGION-docker.pkg.dev/$PROJECT/steam-ray"
IMAGE="$REGISTRY/steam-ray:$TAG"
HERE=$(cd "$(dirname "$0")" && pwd)

# Print a command (shell-quoted, so it can be pasted), then run it unless this is a dry run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    [[ $DRY_RUN == 1 ]] || "$@"
}

# The same, for a command whose stdin is the rendered manifest.
run_stdin() {
    local input=$1
    shift
    printf '+'
    printf ' %q' "$@"
    printf ' <<EOF\n%s\nEOF\n' "$input"
    [[ $DRY_RUN == 1 ]] || printf '%s\n' "$input" | "$@"
}

# A manifest with this project's image, bucket and Google service account filled in.
render() {
    sed -e "s|image: steam-ray\$|image: $IMAGE|" \
        -e "s|steam-ray-data|$BUCKET|g" \
        -e "s|PROJECT_ID|$PROJECT|g" "$1"
}

up() {
    run gcloud services enable container.googleapis.com artifactregistry.googleapis.com \
        storage.googleapis.com iamcredentials.googleapis.com --project "$PROJECT"
    local addons=GcsFuseCsiDriver
    [[ $KUBERAY == addon ]] && addons="$addons,RayOperator"
    # Default pool: one e2-standard-8 for the Ray heads, TensorBoard and system pods.
    run gcloud container clusters create "$CLUSTER" --project "$PROJECT" --location "$ZONE" \
        --release-channel regular --machine-type e2-standard-8 --num-nodes 1 \
        --workload-pool "$PROJECT.svc.id.goog" --addons "$addons"
    # Ray Data workers: scale from zero.
    run gcloud container node-pools create cpu-pool --project "$PROJECT" --cluster "$CLUSTER" \
        --location "$ZONE" --machine-type n2-standard-16 --num-nodes 0 \
        --enable-autoscaling --min-nodes 0 --max-nodes 4 --workload-metadata GKE_METADATA
    # Training/serving workers: one NVIDIA L4 each, drivers installed by GKE (see Dockerfile).
    run gcloud container node-pools create gpu-l4 --project "$PROJECT" --cluster "$CLUSTER" \
        --location "$ZONE" --machine-type g2-standard-12 --num-nodes 0 \
        --accelerator "type=nvidia-l4,count=1,gpu-driver-version=latest" \
        --enable-autoscaling --min-nodes 0 --max-nodes 4 --workload-metadata GKE_METADATA
    run gcloud container clusters get-credentials "$CLUSTER" --project "$PROJECT" --location "$ZONE"
    if [[ $KUBERAY == helm ]]; then
        run helm repo add kuberay https://ray-project.github.io/kuberay-helm/
        run helm repo update kuberay
        run helm upgrade --install kuberay-operator kuberay/kuberay-operator \
            --version "$KUBERAY_VERSION" --namespace kuberay-system --create-namespace --wait
    fi

    run gcloud storage buckets create "gs://$BUCKET" --project "$PROJECT" --location "$REGION" \
        --uniform-bucket-level-access
    run gcloud artifacts repositories create steam-ray --project "$PROJECT" \
        --location "$REGION" --repository-format docker
    # Workload Identity: the pods' Kubernetes SA acts as a Google SA that can use this bucket's
    # objects and nothing else (a bucket-level binding, no project-level storage role).
    run gcloud iam service-accounts create "$GSA" --project "$PROJECT" \
        --display-name "steam_ray Ray pods"
    run gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" \
        --member "serviceAccount:$GSA_EMAIL" --role roles/storage.objectUser
    run gcloud iam service-accounts add-iam-policy-binding "$GSA_EMAIL" --project "$PROJECT" \
        --role roles/iam.workloadIdentityUser \
        --member "serviceAccount:$PROJECT.svc.id.goog[$NAMESPACE/$KSA]"
    run_stdin "$(render "$HERE/serviceaccount.yaml")" kubectl apply -n "$NAMESPACE" -f -

    # Secrets are created here, never committed: the Ray token (clients read it back with
    # `kubectl get secret steam-ray-auth`) and, if given, the W&B key.
    printf '+ kubectl create secret generic steam-ray-auth -n %s --from-literal %s\n' \
        "$NAMESPACE" 'auth_token=$(openssl rand -hex 32)'
    [[ $DRY_RUN == 1 ]] || kubectl create secret generic steam-ray-auth -n "$NAMESPACE" \
        --from-literal "auth_token=$(openssl rand -hex 32)" >/dev/null
    if [[ -n ${WANDB_API_KEY:-} ]]; then
        printf '+ kubectl create secret generic steam-ray-wandb -n %s --from-literal api-key=***\n' \
            "$NAMESPACE"
        [[ $DRY_RUN == 1 ]] || kubectl create secret generic steam-ray-wandb -n "$NAMESPACE" \
            --from-literal "api-key=$WANDB_API_KEY" >/dev/null
    fi
}

build() {
    run gcloud auth configure-docker "$REGION-docker.pkg.dev" --quiet
    run docker build -t "$IMAGE" "$HERE/.."
    run docker push "$IMAGE"
}

apply() {
    [[ $# -gt 0 ]] || { echo "apply: name the manifests (cluster/*.yaml)" >&2; exit 2; }
    local file
    for file in "$@"; do
        run_stdin "$(render "$file")" kubectl apply -n "$NAMESPACE" -f -
    done
}

down() {
    run gcloud container clusters delete "$CLUSTER" --project "$PROJECT" --location "$ZONE" --quiet
    run gcloud iam service-accounts delete "$GSA_EMAIL" --project "$PROJECT" --quiet
    run gcloud artifacts repositories delete steam-ray --project "$PROJECT" --location "$REGION" \
        --quiet
    echo "# The bucket gs://$BUCKET (data, checkpoints) is kept; delete it with:"
    echo "#   gcloud storage rm --recursive gs://$BUCKET"
}

case $ACTION in
    up) up ;;
    build) build ;;
    apply) apply "$@" ;;
    down) down ;;
    *) echo "unknown action: $ACTION (up | build | apply FILE... | down)" >&2; exit 2 ;;
esac
