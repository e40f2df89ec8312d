#!/usr/bin/env bash
# A CUDA 12.4 toolkit for building the +cu12 wheel, from registry packages only, in a folder
# (no root install; nothing on the system changes):
#   scripts/cuda12_toolkit.sh [DIR]     prints DIR (default ~/.cache/fastlstm/cuda-12.4) last
# PyPI has no CUDA 12 nvcc: nvidia-cuda-nvcc-cu12 (every 12.x) ships ptxas, libnvvm, libdevice
# and the crt headers, but no nvcc, cicc, cudafe++, fatbinary or nvlink. Debian's
# nvidia-cuda-toolkit 12.4.131 (trixie, non-free) ships NVIDIA's own statically linked
# binaries (they run on any glibc >= 2.7): apt-get downloads that one .deb with a private
# sources list and cache in DIR (the system's apt configuration is not touched), and dpkg-deb
# unpacks it. The headers and the libraries to link come from PyPI's wheels of the same
# release: nvidia-cuda-nvcc-cu12 (crt headers), nvidia-cuda-runtime-cu12 (cudart),
# nvidia-cuda-cccl-cu12 (libcu++'s <nv/target>, which cuda_fp16.h includes),
# nvidia-cublas-cu12 (cuBLAS; libcublas.so.12 only to link against: at run time torch's
# nvidia-cublas-cu12 provides it). The result is a CUDA_HOME: bin/nvcc, nvvm/bin/cicc,
# nvvm/libdevice, include/, lib64/.
set -euo pipefail
dir="${1:-${FASTLSTM_CUDA12_HOME:-$HOME/.cache/fastlstm/cuda-12.4}}"
deb_version="12.4.131~12.4.1-2"
pip_pkgs=(nvidia-cuda-nvcc-cu12==12.4.131 nvidia-cuda-runtime-cu12==12.4.127
          nvidia-cublas-cu12==12.4.5.8 nvidia-cuda-cccl-cu12==12.4.127.post1)
python="${PYTHON:-python3}"
root=$(cd "$(dirname "$0")/.." && pwd)
# Assembled before (the stamp is written last, so an interrupted run starts again).
if [ -f "$dir/.complete" ] && "$dir/bin/nvcc" --version 2>/dev/null | grep -q 'release 12\.'; then
  echo "$dir"; exit 0
fi
rm -rf "$dir" && mkdir -p "$dir"
dl="$dir/.download"
mkdir -p "$dl/apt/lists/partial" "$dl/apt/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie non-free" \
  > "$dl/apt/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$dl/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$dl/apt/lists" -o "Dir::Cache=$dl/apt/cache"
          -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$dl" && apt-get "${apt_opts[@]}" -qq download "nvidia-cuda-toolkit=$deb_version" >&2)
dpkg-deb -x "$dl"/nvidia-cuda-toolkit_*.deb "$dl/deb"
mkdir -p "$dir/bin/crt" "$dir/nvvm/bin" "$dir/nvvm/libdevice" "$dir/include" "$dir/lib64"
for t in nvcc; do cp "$dl/deb/usr/lib/nvidia-cuda-toolkit/bin/$t" "$dir/bin/"; done
cp "$dl"/deb/usr/lib/nvidia-cuda-toolkit/bin/crt/* "$dir/bin/crt/"
for t in cudafe++ ptxas fatbinary nvlink bin2c cuobjdump nvprune cu++filt; do
  cp "$dl/deb/usr/bin/$t" "$dir/bin/"
done
cp "$dl/deb/usr/lib/nvidia-cuda-toolkit/bin/cicc" "$dir/nvvm/bin/"
cp "$dl/deb/usr/lib/nvidia-cuda-toolkit/libdevice/libdevice.10.bc" "$dir/nvvm/libdevice/"
# CUDA's own nvcc.profile, relative to the toolkit's folder.
cat > "$dir/bin/nvcc.profile" <<'EOF'
TOP = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
PATH += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES += "-I$(TOP)/include" $(_SPACE_)
LIBRARIES =+ $(_SPACE_) "-L$(TOP)/lib64"
CUDAFE_FLAGS +=
PTXAS_FLAGS +=
EOF
"$root/scripts/pip_retry.sh" "$python" --quiet --no-deps --target "$dl/pip" "${pip_pkgs[@]}" >&2
for p in cuda_nvcc cuda_runtime cublas cuda_cccl; do
  cp -r "$dl/pip/nvidia/$p/include/." "$dir/include/"
done
rm -f "$dir/include/__init__.py"; rm -rf "$dir/include/__pycache__"
cp -P "$dl"/pip/nvidia/cuda_runtime/lib/libcudart.so.12* "$dl"/pip/nvidia/cublas/lib/libcublas.so.12* \
   "$dl"/pip/nvidia/cublas/lib/libcublasLt.so.12* "$dir/lib64/"
ln -sf libcudart.so.12 "$dir/lib64/libcudart.so"
ln -sf libcublas.so.12 "$dir/lib64/libcublas.so"
ln -sf libcublasLt.so.12 "$dir/lib64/libcublasLt.so"
rm -rf "$dl"
"$dir/bin/nvcc" --version | tail -n 2 >&2
echo "nvidia-cuda-toolkit $deb_version (Debian) ${pip_pkgs[*]} (PyPI)" > "$dir/.complete"
echo "$dir"
