#!/usr/bin/env bash
# Runs on the device machine from the repository root with `.device` carried (scripts/device/make-carry.mjs):
#   bash .device/run.sh [webgpu|cuda|tensorrt|cpu] [extra bench arguments...]
# Unpacks node and onnxruntime (python3's lzma: the image has python3, maybe not xz), installs the carried Vulkan
# loader when the machine has none, and measures a synthetic full-size fp16 pack (default config, 512²): per-graph
# times and live fps at 1, 2 and 4 LCM steps, window policy then kvcache. Figures go to $OUT/xpd-<device>.json (or
# ./xpd-<device>.json), rewritten after every stage, so a run cut off by the time limit still returns its figures.
set -uo pipefail
cd "$(dirname "$0")"
DEV="${1:-webgpu}"; shift || true
OUTDIR="${OUT:-$PWD}"
unxz() { python3 -c 'import lzma,sys; open(sys.argv[2],"wb").write(lzma.open(sys.argv[1]).read())' "$1" "$2"; }
[ -x ./node ] || { unxz node.xz node && chmod +x node; }
LIB=node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1
[ -f "$LIB" ] || unxz "$LIB.xz" "$LIB"
if [ "$DEV" = webgpu ] && ! ldconfig -p | grep -q libvulkan.so.1; then
  for f in gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
  ldconfig
fi
if [ "$DEV" = webgpu ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
echo "run.sh: $(./node --version), device $DEV, $(nproc) cores, $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
# In the repository copy (an ignored folder): kept between calls on the same warm machine, so a second call reuses
# the pack the first one built.
WORK="${XPD_WORK:-$(cd .. && pwd)/.xpd-work}"
mkdir -p "$WORK"
./node xportrait-device.mjs --xpd-synthetic "${XPD_SYNTHETIC:-full}" --xpd-device "$DEV" --xpd-dir "$WORK" \
  --xpd-steps "${XPD_STEPS:-1,2,4}" --xpd-frames "${XPD_FRAMES:-40}" --xpd-reps "${XPD_REPS:-5}" --xpd-threads "$(nproc)" \
  --xpd-policy "${XPD_POLICY:-window,kvcache}" \
  --json "$OUTDIR/xpd-$DEV.json" "$@" > /dev/null
status=$?
echo "run.sh: exit $status, figures in $OUTDIR/xpd-$DEV.json"
exit $status
