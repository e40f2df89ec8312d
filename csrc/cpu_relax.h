// cpu_relax: the pause a spinning wait puts in each turn (it frees the core's shared resources
// for a hyper-thread sibling and eases the memory traffic of the spin). Inline assembly, not
// <immintrin.h>: the header is also compiled by nvcc, host side.
#pragma once

namespace fastlstm {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __asm__ __volatile__("pause");
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

}  // namespace fastlstm
