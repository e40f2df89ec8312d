// Debug allocation, switched on by the CUDA emulation (torch.ops.fastlstm._simt_emulate's
// debug_alloc, on by default in fastlstm._simt.emulated_cuda). While it is on, every buffer the
// layer ops allocate through empty_like_device / zeros_like_device (csrc/torch_api.h):
//  - starts with every byte 0xFF (empty) or 0 (zeros): 0xFF is NaN in every float type and -1
//    in every integer type, so a kernel that reads memory nobody wrote (a reserve left
//    unzeroed) fails every time, not only when the allocator happens to hand back garbage;
//  - is followed by a guard tail of 0xFF bytes, as long as the buffer (at most 1 MiB more), so
//    that a read past the end reads NaN instead of another object, and a write past the end
//    lands in the guard: check_guards() after every emulated launch and end_op() at the end of
//    every emulated op find it and fail with a message naming the buffer, not with a crash;
//  - is kept alive until the end of the op, so that no guard is read after its buffer died.
// Off (the default, and always on a GPU) it costs one relaxed atomic load per allocation.
#pragma once

#include "torch_api.h"

namespace fastlstm::debug_alloc {

void set_enabled(bool on);
// Throws std::runtime_error naming the first buffer whose guard tail changed; `after` says what
// just ran (a kernel launch, an op).
void check_guards(const char* after);
// The op's buffers are checked, then forgotten (their memory is the caller's again).
void end_op(const char* op);
// Forgets the op's buffers without checking (the op is failing anyway).
void forget_all();
// f(data, bytes) for every live buffer (its data, not its guard tail): the emulator's weak-memory
// mode (csrc/simt/emulator.cpp) models these buffers as the launch's global memory.
void for_each_buffer(void (*f)(void* data, size_t bytes, void* context), void* context);

// end_op on success, forget_all on an exception: `OpScope scope("op"); ...; scope.done();`
class OpScope {
 public:
  explicit OpScope(const char* op) : op_(op) {}
  ~OpScope() {
    if (!done_) forget_all();
  }
  void done() {
    done_ = true;
    end_op(op_);
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  const char* op_;
  bool done_ = false;
};

}  // namespace fastlstm::debug_alloc
