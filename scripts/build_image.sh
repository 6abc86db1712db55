#!/usr/bin/env bash
# Bakes the nodes' Python environment (pyproject.toml's pins, the vLLM extra, Ray's autoscaler
# clients) into a machine image, once per change of the pins, so that a node joining the cluster
# installs nothing from a package index: the cluster files' setup only checks the image and puts
# the synced code on its path. Why and how: docs/cluster.md, "Images".
#
#   scripts/build_image.sh aws <region> <base-ami> <subnet-id> <security-group-id>
#   scripts/build_image.sh gcp <project> <zone> <base-image>
#   scripts/build_image.sh payload        # print what runs on the builder, build nothing
#
# <base-ami>: a "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)" release with driver
# >= 580; <subnet-id>: a public subnet (the builder downloads packages); <base-image>:
# projects/<p>/global/images/family/<f> or projects/<p>/global/images/<name>, Ubuntu 24.04 with
# driver >= 580. The builder is a CPU machine: the driver is read from its kernel module.
# Prints the image to set: cluster.yaml's ImageId, or cluster-gcp.yaml's sourceImage (family
# w2s-ray in <project>).
set -euo pipefail
cd "$(dirname "$0")/.."

# torch 2.13's default Linux wheel is its CUDA 13 build, whose runtime needs the R580 driver
# branch or newer; pyproject.toml requires Python >= 3.11.
MIN_DRIVER=580
MIN_PYTHON=3.11
STAMP=$(date -u +%Y%m%d-%H%M%S)

die() { echo "build_image.sh: $*" >&2; exit 1; }

# Runs as root on the builder. Its result is a line on the console (which the caller polls):
# W2S_IMAGE_OK, or W2S_IMAGE_FAILED: <why>.
payload() {
  cat <<EOF
#!/bin/bash
set -euo pipefail
fail() { echo "W2S_IMAGE_FAILED: \$*"; exit 1; }
trap 'fail "line \$LINENO: \$BASH_COMMAND"' ERR

drv=\$(modinfo -F version nvidia 2>/dev/null || true)
[ -n "\$drv" ] || fail "the base image has no NVIDIA kernel module"
[ "\${drv%%.*}" -ge $MIN_DRIVER ] || fail "NVIDIA driver \$drv in the base image; torch 2.13's CUDA 13 build needs the R$MIN_DRIVER branch or newer"
py=\$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' || true)
[ -n "\$py" ] && [ "\$(printf '%s\n' $MIN_PYTHON "\$py" | sort -V | head -n1)" = $MIN_PYTHON ] \
  || fail "python3 is '\$py' in the base image; the project needs >= $MIN_PYTHON"

export DEBIAN_FRONTEND=noninteractive
# A first boot's unattended upgrades may hold dpkg's lock for minutes.
apt-get -o DPkg::Lock::Timeout=900 update -q
apt-get -o DPkg::Lock::Timeout=900 install -y -q python3-venv mdadm
V=/opt/w2s-venv
python3 -m venv \$V
\$V/bin/pip install -q -U pip
# The project's own requirements from its pyproject.toml alone (an empty package of the same
# name), then the package removed: the nodes run the code rsync brings, never a copy from here.
mkdir -p /tmp/w2s-pins/w2s_ray
touch /tmp/w2s-pins/w2s_ray/__init__.py
base64 -d > /tmp/w2s-pins/pyproject.toml <<'PYPROJECT'
$(base64 pyproject.toml)
PYPROJECT
\$V/bin/pip install -q "/tmp/w2s-pins[vllm]" "ray[default]" "boto3>=1.4.8" google-api-python-client
\$V/bin/pip uninstall -q -y w2s-ray
cp /tmp/w2s-pins/pyproject.toml \$V/w2s-pyproject.toml
\$V/bin/python -c 'import torch, sys; sys.exit(0 if (torch.version.cuda or "").startswith("13") else "torch " + torch.__version__ + " is not the CUDA 13 build")' \
  || fail "pip resolved a torch without CUDA 13"
\$V/bin/pip check || fail "pip check: the environment's requirements conflict"
rm -rf /tmp/w2s-pins /root/.cache/pip
sync
echo "W2S_IMAGE_OK"
EOF
}

# Polls the builder's console output (the command after the builder's name) until the
# payload's result line appears; an hour at most.
await_result() {
  local builder=$1 out i
  shift
  for ((i = 0; i < 120; i++)); do
    out=$("$@" 2>/dev/null || true)
    case $out in
      *W2S_IMAGE_OK*) return 0 ;;
      *W2S_IMAGE_FAILED*) die "on $builder: $(grep -o 'W2S_IMAGE_FAILED.*' <<<"$out" | head -n1)" ;;
    esac
    sleep 30
  done
  die "no result on the console of $builder after an hour"
}

aws_build() {
  [ $# -eq 4 ] || die "usage: $0 aws <region> <base-ami> <subnet-id> <security-group-id>"
  local region=$1 base=$2 subnet=$3 sg=$4 root id ami
  command -v aws >/dev/null || die "the AWS CLI (aws) is not installed"
  root=$(aws ec2 describe-images --region "$region" --image-ids "$base" \
           --query 'Images[0].RootDeviceName' --output text)
  id=$(aws ec2 run-instances --region "$region" --image-id "$base" --instance-type m6i.2xlarge \
         --subnet-id "$subnet" --security-group-ids "$sg" --associate-public-ip-address \
         --block-device-mappings "DeviceName=$root,Ebs={VolumeSize=200,VolumeType=gp3,DeleteOnTermination=true}" \
         --tag-specifications "ResourceType=instance,Tags=[{Key=Name,Value=w2s-ray-image-builder}]" \
         --user-data "$(payload)" --query 'Instances[0].InstanceId' --output text)
  # Expanded now: the function's locals are gone when the trap runs.
  trap "aws ec2 terminate-instances --region '$region' --instance-ids '$id' >/dev/null" EXIT
  echo "builder $id: installing (about 15 minutes)" >&2
  aws ec2 wait instance-running --region "$region" --instance-ids "$id"
  await_result "$id" aws ec2 get-console-output --region "$region" --instance-id "$id" --latest \
    --output text
  # The image is made from the stopped builder's volume, written out by a clean shutdown.
  aws ec2 stop-instances --region "$region" --instance-ids "$id" >/dev/null
  aws ec2 wait instance-stopped --region "$region" --instance-ids "$id"
  ami=$(aws ec2 create-image --region "$region" --instance-id "$id" --name "w2s-ray-$STAMP" \
          --description "w2s-ray nodes: $(sha256sum pyproject.toml | cut -c1-12) pyproject.toml" \
          --query ImageId --output text)
  aws ec2 wait image-available --region "$region" --image-ids "$ami"
  echo "$ami"
}

gcp_build() {
  [ $# -eq 3 ] || die "usage: $0 gcp <project> <zone> <base-image>"
  local project=$1 zone=$2 base=$3 name="w2s-ray-image-builder-$STAMP" from tmp
  command -v gcloud >/dev/null || die "the Google Cloud CLI (gcloud) is not installed"
  case $base in
    projects/*/global/images/family/*) from=(--image-project "$(cut -d/ -f2 <<<"$base")" --image-family "${base##*/}") ;;
    projects/*/global/images/*) from=(--image-project "$(cut -d/ -f2 <<<"$base")" --image "${base##*/}") ;;
    *) die "<base-image>: projects/<p>/global/images/family/<f> or projects/<p>/global/images/<name>" ;;
  esac
  tmp=$(mktemp)
  payload > "$tmp"
  gcloud compute instances create "$name" --project "$project" --zone "$zone" \
    --machine-type n2-standard-8 "${from[@]}" --boot-disk-size 200GB --boot-disk-type pd-ssd \
    --metadata-from-file startup-script="$tmp" >/dev/null
  rm -f "$tmp"
  trap "gcloud compute instances delete '$name' --project '$project' --zone '$zone' --quiet >/dev/null" EXIT
  echo "builder $name: installing (about 15 minutes)" >&2
  await_result "$name" gcloud compute instances get-serial-port-output "$name" \
    --project "$project" --zone "$zone"
  gcloud compute instances stop "$name" --project "$project" --zone "$zone" >/dev/null
  gcloud compute images create "w2s-ray-$STAMP" --project "$project" --family w2s-ray \
    --source-disk "$name" --source-disk-zone "$zone" \
    --description "w2s-ray nodes: $(sha256sum pyproject.toml | cut -c1-12) pyproject.toml" >/dev/null
  echo "projects/$project/global/images/family/w2s-ray"
}

case ${1:-} in
  aws) shift; aws_build "$@" ;;
  gcp) shift; gcp_build "$@" ;;
  payload) payload ;;
  *) die "usage: $0 aws <region> <base-ami> <subnet-id> <security-group-id> | gcp <project> <zone> <base-image> | payload" ;;
esac
