/* printf to the device's console (semihosting on Arm, the UART on RISC-V): %d %i %u %x %ld %lu %lld
 * %llu %s %c %% and %g/%e/%f with a precision (firmware/libc.c). */
#ifndef EDGERNN_STDIO_H
#define EDGERNN_STDIO_H
int printf(const char *format, ...) __attribute__((format(printf, 1, 2)));
int putchar(int c);
int puts(const char *s);
#endif
