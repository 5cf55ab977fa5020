# Shared by bench/gpu_check.sh and bench/cpu_check.sh (sourced after OUT is set): each step of a prepared
# measurement session runs with its own time limit, its output in $OUT/NAME.log, start / end / rc in steps.log.
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/steps.log"; }
step() {  # step NAME SECONDS COMMAND...: run with a limit, stdout+stderr to $OUT/NAME.log, rc in steps.log
    local name=$1 limit=$2
    shift 2
    log "start $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    log "end $name rc=$? $((SECONDS - t0))s"
}
