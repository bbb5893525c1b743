#!/usr/bin/env bash
# Runs `chunkedgraph pipeline` on Kubernetes: one Indexed Job per step, in order.
#
#   deploy/k8s/run.sh --config dataset.toml --image IMAGE --name RUN \
#       [--shards N] [--parallelism P] [--cpus C] [--memory M] \
#       [--service-account SA] [--namespace NS] [--dry-run]
#
# The step list and task counts come from `chunkedgraph pipeline plan --config ...` (run here,
# so this machine needs read access to the input). A step gets min(tasks, --shards) shards
# (the job's completions), run --parallelism at a time. A step whose job already completed
# is skipped, so the script can be re-run after a failure; tasks inside a job skip finished
# work too. --dry-run prints the manifests instead of applying them.
# Environment: BIGTABLE_PROJECT and BIGTABLE_INSTANCE (the graph's Cloud Bigtable),
# CHUNKEDGRAPH (the binary for `plan`; default: chunkedgraph on PATH).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "run.sh: $*" >&2; exit 1; }

config= image= name= dry=
shards=256 parallelism=64 cpus=2 memory=8Gi sa=chunkedgraph namespace=
while [ $# -gt 0 ]; do
  case $1 in
    --config) config=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --parallelism) parallelism=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --service-account) sa=$2; shift 2 ;;
    --namespace) namespace=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
[ -n "$config" ] && [ -f "$config" ] || die "--config FILE is required and must exist"
[ -n "$image" ] || die "--image IMAGE is required (a container with the chunkedgraph binary)"
[[ "$name" =~ ^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$ ]] ||
  die "--name must be a short DNS label (lowercase letters, digits, '-'): got '$name'"
for v in shards parallelism cpus; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "--$v must be a positive integer"
done
if [ -z "$dry" ]; then
  [ -n "${BIGTABLE_PROJECT:-}" ] && [ -n "${BIGTABLE_INSTANCE:-}" ] ||
    die "set BIGTABLE_PROJECT and BIGTABLE_INSTANCE (the graph's Cloud Bigtable)"
  command -v kubectl >/dev/null || die "kubectl is missing"
fi
cg=${CHUNKEDGRAPH:-chunkedgraph}
command -v "$cg" >/dev/null || die "$cg is missing: build it (cargo build --release -p chunkedgraph) or set CHUNKEDGRAPH"
kubectl_ns=(kubectl)
[ -n "$namespace" ] && kubectl_ns+=(--namespace "$namespace")

plan=$("$cg" pipeline plan --config "$config") || die "chunkedgraph pipeline plan failed"
configmap="chunkedgraph-$name"

render() { # step, completions, parallelism, job name
  local text
  text=$(<"$here/job.yaml")
  local -A values=(
    [JOB_NAME]=$4 [RUN_NAME]=$name [STEP]=$1 [COMPLETIONS]=$2 [PARALLELISM]=$3
    [IMAGE]=$image [CPUS]=$cpus [MEMORY]=$memory [SERVICE_ACCOUNT]=$sa
    [CONFIGMAP]=$configmap [BIGTABLE_PROJECT]=${BIGTABLE_PROJECT:-PROJECT}
    [BIGTABLE_INSTANCE]=${BIGTABLE_INSTANCE:-INSTANCE}
  )
  local k
  for k in "${!values[@]}"; do
    text=${text//"\${$k}"/${values[$k]}}
  done
  case $text in *'${'*) die "job.yaml has a field run.sh does not fill" ;; esac
  printf '%s\n' "$text"
}

if [ -n "$dry" ]; then
  echo "# ConfigMap $configmap holds $config as dataset.toml"
else
  "${kubectl_ns[@]}" create configmap "$configmap" --from-file=dataset.toml="$config" \
    --dry-run=client -o yaml | "${kubectl_ns[@]}" apply -f - >/dev/null
fi

while IFS= read -r line; do
  [ -n "$line" ] || continue
  step=$(sed -n 's/.*"step":"\([^"]*\)".*/\1/p' <<<"$line")
  tasks=$(sed -n 's/.*"tasks":\([0-9]*\).*/\1/p' <<<"$line")
  [ -n "$step" ] && [ -n "$tasks" ] || die "unexpected plan line: $line"
  completions=$(( tasks < shards ? tasks : shards ))
  [ "$completions" -ge 1 ] || completions=1
  par=$(( completions < parallelism ? completions : parallelism ))
  job="cg-$name-$step"
  if [ -n "$dry" ]; then
    echo "---"
    render "$step" "$completions" "$par" "$job"
    continue
  fi
  state=$("${kubectl_ns[@]}" get job "$job" -o jsonpath='{.status.conditions[?(@.status=="True")].type}' 2>/dev/null || true)
  if [[ " $state " == *" Complete "* ]]; then
    echo "$step: already complete"
    continue
  fi
  if [[ " $state " == *" Failed "* ]]; then
    echo "$step: an earlier job failed; deleting it to retry"
    "${kubectl_ns[@]}" delete job "$job" --wait=true >/dev/null
    state=
  fi
  if [ -z "$state" ] && ! "${kubectl_ns[@]}" get job "$job" >/dev/null 2>&1; then
    render "$step" "$completions" "$par" "$job" | "${kubectl_ns[@]}" apply -f - >/dev/null
  fi
  echo "$step: $tasks task(s) in $completions shard(s), $par at a time"
  started=$SECONDS
  while :; do
    state=$("${kubectl_ns[@]}" get job "$job" -o jsonpath='{.status.conditions[?(@.status=="True")].type}')
    case " $state " in
      *" Complete "*) echo "$step: complete in $(( SECONDS - started )) s"; break ;;
      *" Failed "*) die "$step failed: kubectl ${namespace:+-n $namespace }describe job $job; kubectl logs -l job-name=$job" ;;
    esac
    done_n=$("${kubectl_ns[@]}" get job "$job" -o jsonpath='{.status.succeeded}')
    printf '\r%s: %s/%s shards done' "$step" "${done_n:-0}" "$completions"
    sleep 10
  done
done <<<"$plan"
echo "pipeline $name finished: serve it with chunkedgraph serve --bigtable-project \$BIGTABLE_PROJECT --bigtable-instance \$BIGTABLE_INSTANCE"
