// fastlstm's one door to torch: PyTorch's stable ABI (torch::stable, torch::headeronly), built
// with TORCH_TARGET_VERSION = 2.10 so that one binary loads into every torch from 2.10 on.
// No ATen or c10 library header is included anywhere in csrc/; what the code needs beyond the
// stable Tensor is here: dtype names and tags, allocation helpers, raw data pointers and the
// argument checks' error formatting.
//
// Errors: a failed FASTLSTM_CHECK_VALUE throws std::invalid_argument, which torch turns into
// a Python ValueError; every other failure throws std::runtime_error (RuntimeError). The
// stable ABI cannot raise TypeError: dtype errors that must be TypeError are raised by the
// Python layer (fastlstm/_inputs.py) before the op runs.
#pragma once

#include <torch/csrc/stable/device.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <array>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace fastlstm {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using Half = torch::headeronly::Half;
using BFloat16 = torch::headeronly::BFloat16;
using Sizes = std::vector<int64_t>;

inline constexpr ScalarType kFloat = ScalarType::Float;
inline constexpr ScalarType kDouble = ScalarType::Double;
inline constexpr ScalarType kHalf = ScalarType::Half;
inline constexpr ScalarType kBFloat16 = ScalarType::BFloat16;
inline constexpr ScalarType kLong = ScalarType::Long;
inline constexpr ScalarType kInt = ScalarType::Int;
inline constexpr ScalarType kByte = ScalarType::Byte;
inline constexpr ScalarType kBool = ScalarType::Bool;

// The dtype of a C++ element type.
template <typename T>
constexpr ScalarType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return kFloat;
  else if constexpr (std::is_same_v<T, double>) return kDouble;
  else if constexpr (std::is_same_v<T, Half>) return kHalf;
  else if constexpr (std::is_same_v<T, BFloat16>) return kBFloat16;
  else if constexpr (std::is_same_v<T, int64_t>) return kLong;
  else if constexpr (std::is_same_v<T, int32_t>) return kInt;
  else if constexpr (std::is_same_v<T, uint8_t>) return kByte;
  else static_assert(sizeof(T) == 0, "fastlstm: no dtype for this element type");
}

// The type gates and cell state accumulate in: float for half types, else T itself.
template <typename T>
using acc_type_t = std::conditional_t<std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>,
                                      float, T>;

inline bool is_floating(ScalarType t) {
  return t == kFloat || t == kDouble || t == kHalf || t == kBFloat16;
}
inline bool is_integer(ScalarType t) {  // bool excluded, as torch's isIntegralType(t, false)
  return t == kByte || t == ScalarType::Char || t == ScalarType::Short || t == kInt ||
         t == kLong || t == ScalarType::UInt16 || t == ScalarType::UInt32 ||
         t == ScalarType::UInt64;
}

// ---- Error messages -------------------------------------------------------------------------

// Printable forms of what checks report: "[2, 3]", "Float", "cuda:0".
struct SizesText {
  std::vector<int64_t> v;
};
inline SizesText text(torch::headeronly::IntHeaderOnlyArrayRef sizes) {
  return {std::vector<int64_t>(sizes.begin(), sizes.end())};
}
inline SizesText text(const std::vector<int64_t>& sizes) { return {sizes}; }
inline std::ostream& operator<<(std::ostream& os, const SizesText& s) {
  os << '[';
  for (size_t i = 0; i < s.v.size(); ++i) os << (i ? ", " : "") << s.v[i];
  return os << ']';
}
inline std::string text(ScalarType t) { return torch::headeronly::toString(t); }
inline std::string text(const torch::stable::Device& d) {
  if (d.is_cpu()) return "cpu";
  std::string s = d.is_cuda() ? "cuda" : "device" + std::to_string(int(d.type()));
  return d.has_index() ? s + ":" + std::to_string(int(d.index())) : s;
}

template <typename... Args>
std::string message(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace fastlstm

// Throw with a message built from the arguments, each streamed as by std::ostream.
#define FASTLSTM_CHECK(cond, ...) \
  do {                            \
    if (!(cond)) [[unlikely]]     \
      throw std::runtime_error(::fastlstm::message(__VA_ARGS__)); \
  } while (0)
#define FASTLSTM_CHECK_VALUE(cond, ...) \
  do {                                  \
    if (!(cond)) [[unlikely]]           \
      throw std::invalid_argument(::fastlstm::message(__VA_ARGS__)); \
  } while (0)

namespace fastlstm {

// ---- Tensors --------------------------------------------------------------------------------

// Raw element pointers, unchecked (the dtype was checked at the op boundary; the checked
// torch::stable accessors cost a query per call, which adds up in per-step loops).
template <typename T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}
template <typename T>
const T* cptr(const Tensor& t) {
  return static_cast<const T*>(t.const_data_ptr());
}

// The CUDA emulation's debug allocator (csrc/debug_alloc.h): fresh buffers filled with 0xFF
// (NaN) and followed by a checked guard tail.
bool debug_alloc_enabled();
Tensor debug_alloc_empty(const Sizes& sizes, ScalarType dtype, const Tensor& like, bool zero);

// New tensors on `like`'s device.
inline Tensor empty_like_device(const Sizes& sizes, ScalarType dtype, const Tensor& like) {
  if (debug_alloc_enabled()) return debug_alloc_empty(sizes, dtype, like, /*zero=*/false);
  return torch::stable::new_empty(like, sizes, dtype);
}
inline Tensor zeros_like_device(const Sizes& sizes, ScalarType dtype, const Tensor& like) {
  if (debug_alloc_enabled()) return debug_alloc_empty(sizes, dtype, like, /*zero=*/true);
  return torch::stable::new_zeros(like, sizes, dtype);
}
inline Tensor empty_cpu(const Sizes& sizes, ScalarType dtype, bool pinned = false) {
  return torch::stable::empty(sizes, dtype, std::nullopt,
                              torch::stable::Device(torch::stable::DeviceType::CPU),
                              pinned ? std::optional<bool>(true) : std::nullopt);
}

inline bool same_sizes(const Tensor& t, const Sizes& expected) {
  const auto s = t.sizes();
  return s.size() == expected.size() && std::equal(s.begin(), s.end(), expected.begin());
}
inline bool same_device(const Tensor& a, const Tensor& b) { return a.device() == b.device(); }

inline Tensor as_contiguous(const Tensor& t) {
  return t.is_contiguous() ? t : torch::stable::contiguous(t);
}
inline Tensor to_dtype(const Tensor& t, ScalarType dtype) {
  return t.scalar_type() == dtype ? t : torch::stable::to(t, dtype);
}
inline Tensor narrowed(const Tensor& t, int64_t dim, int64_t start, int64_t length) {
  Tensor view = t;  // torch::stable::narrow takes a non-const reference
  return torch::stable::narrow(view, dim, start, length);
}

template <size_t kResults, size_t... I>
std::array<Tensor, kResults> results_from(StableIValue* stack, std::index_sequence<I...>) {
  return {torch::stable::detail::to<Tensor>(stack[I])...};
}

// An aten op that torch::stable does not wrap, called through the dispatcher: its tensor
// results, in schema order. Arguments in schema order (no Scalar arguments: the stable ABI
// cannot box them).
template <size_t kResults, typename... Args>
std::array<Tensor, kResults> call_op(const char* name, const char* overload,
                                     const Args&... args) {
  constexpr size_t kSlots = sizeof...(Args) > kResults ? sizeof...(Args) : kResults;
  std::array<StableIValue, kSlots> stack{torch::stable::detail::from(args)...};
  STABLE_TORCH_ERROR_CODE_CHECK(
      torch_call_dispatcher(name, overload, stack.data(), TORCH_ABI_VERSION));
  return results_from<kResults>(stack.data(), std::make_index_sequence<kResults>());
}

}  // namespace fastlstm
