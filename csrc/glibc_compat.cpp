// The glibc floor of the library: manylinux_2_28 (glibc 2.28, as torch's own wheels), though
// it is built on a newer glibc (Debian 12: 2.36). Three references would raise it, each bound
// here to what glibc 2.28 has (tests/test_wheels.py checks the built library with objdump):
//  - dlsym@GLIBC_2.34 (torch's stable-ABI headers look up shim functions; glibc 2.34 moved it
//    into libc): dlsym@GLIBC_2.2.5, which every glibc has (libdl before 2.34, libc since).
//  - exp@GLIBC_2.29 (the version without SVID error handling): exp@GLIBC_2.2.5, the same
//    result (only errno handling differs; the library never reads errno).
//  - __libc_single_threaded@GLIBC_2.32 (read by libstdc++'s inline reference counting): a
//    hidden variable of this library, always 0 ("not known to be single-threaded"), so that
//    libstdc++ always takes its atomic path, which is correct in every process.
// setup.py links with -Wl,--wrap=dlsym,--wrap=exp, so every reference of every object file
// reaches the __wrap_ functions below, which call the old versions.
#include <cstddef>

extern "C" {
void* fastlstm_dlsym_2_2_5(void* handle, const char* symbol);
double fastlstm_exp_2_2_5(double x);
__asm__(".symver fastlstm_dlsym_2_2_5, dlsym@GLIBC_2.2.5");
__asm__(".symver fastlstm_exp_2_2_5, exp@GLIBC_2.2.5");

__attribute__((visibility("hidden"))) void* __wrap_dlsym(void* handle, const char* symbol) {
  return fastlstm_dlsym_2_2_5(handle, symbol);
}
__attribute__((visibility("hidden"))) double __wrap_exp(double x) {
  return fastlstm_exp_2_2_5(x);
}
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
}
