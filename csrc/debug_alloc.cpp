// The debug allocator of the CUDA emulation; see debug_alloc.h.
#include "debug_alloc.h"

#include <atomic>
#include <cstring>
#include <mutex>
#include <sstream>

namespace fastlstm {
namespace {

constexpr unsigned char kFill = 0xFF;  // NaN in every float type, -1 in integer types
constexpr size_t kMinGuardBytes = 256, kMaxGuardBytes = size_t(1) << 20;

std::atomic<bool> g_enabled{false};

struct Buffer {
  Tensor base;          // keeps the memory alive until the op ends
  size_t data_bytes;    // the buffer the caller sees
  size_t guard_bytes;   // the guard tail after it
  Sizes sizes;
  ScalarType dtype;
};
std::mutex g_mutex;
std::vector<Buffer> g_buffers;

size_t element_bytes(ScalarType dtype) {
  switch (dtype) {
    case kDouble: case kLong: return 8;
    case kFloat: case kInt: return 4;
    case kHalf: case kBFloat16: return 2;
    default: return 1;
  }
}

std::string describe(const Buffer& b) {
  std::ostringstream s;
  s << "a buffer of shape [";
  for (size_t i = 0; i < b.sizes.size(); ++i) s << (i ? ", " : "") << b.sizes[i];
  s << "] (" << b.data_bytes << " bytes, element size " << element_bytes(b.dtype) << ")";
  return s.str();
}

}  // namespace

bool debug_alloc_enabled() { return g_enabled.load(std::memory_order_relaxed); }

Tensor debug_alloc_empty(const Sizes& sizes, ScalarType dtype, const Tensor& like, bool zero) {
  FASTLSTM_CHECK(like.is_cpu(), "fastlstm: the debug allocator serves the CUDA emulation "
                 "(CPU tensors) only");
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t esize = element_bytes(dtype);
  const size_t data_bytes = static_cast<size_t>(numel) * esize;
  const size_t guard_bytes = std::min(std::max(data_bytes, kMinGuardBytes), kMaxGuardBytes);
  const int64_t guard_elems = static_cast<int64_t>((guard_bytes + esize - 1) / esize);
  Tensor base = torch::stable::new_empty(like, {numel + guard_elems}, dtype);
  auto* bytes = static_cast<unsigned char*>(base.mutable_data_ptr());
  std::memset(bytes, zero ? 0 : kFill, data_bytes);
  std::memset(bytes + data_bytes, kFill, guard_elems * esize);
  Tensor data = torch::stable::narrow(base, 0, 0, numel);
  data = torch::stable::view(data, sizes);
  std::lock_guard<std::mutex> lock(g_mutex);
  g_buffers.push_back({base, data_bytes, guard_elems * esize, sizes, dtype});
  return data;
}

namespace debug_alloc {

void set_enabled(bool on) {
  if (!on) forget_all();
  g_enabled = on;
}

void check_guards(const char* after) {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const Buffer& b : g_buffers) {
    const auto* bytes = static_cast<const unsigned char*>(b.base.const_data_ptr());
    for (size_t i = 0; i < b.guard_bytes; ++i) {
      if (bytes[b.data_bytes + i] != kFill) {
        std::ostringstream msg;
        msg << "fastlstm (emulated CUDA, debug allocator): a write past the end of "
            << describe(b) << ", " << i << " bytes past its end, found after " << after;
        throw std::runtime_error(msg.str());
      }
    }
  }
}

void end_op(const char* op) {
  if (!debug_alloc_enabled()) return;
  try {
    check_guards(op);
  } catch (...) {
    forget_all();
    throw;
  }
  forget_all();
}

void for_each_buffer(void (*f)(void* data, size_t bytes, void* context), void* context) {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (Buffer& b : g_buffers)
    if (b.data_bytes > 0) f(b.base.mutable_data_ptr(), b.data_bytes, context);
}

void forget_all() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_buffers.clear();
}

}  // namespace debug_alloc
}  // namespace fastlstm
