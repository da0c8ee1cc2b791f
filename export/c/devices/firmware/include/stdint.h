/* <stdint.h> on a bare-metal device: the C library's where the toolchain has one (newlib on Arm), else
 * the compiler's own definitions (RISC-V: no C library). */
#ifndef EDGERNN_STDINT_H
#define EDGERNN_STDINT_H
#ifdef __riscv
#include <stdint-gcc.h>
#else
#include_next <stdint.h>
#endif
#endif
