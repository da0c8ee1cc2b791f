/* printf to the device's console (semihosting on Arm, the UART on RISC-V): %d %i %u %x %ld %lu %lld
 * %llu %s %c %% and %g/%e/%f with a precision (firmware/libc.c). The console is line-buffered already:
 * setvbuf and fflush accept stdout and stderr and change nothing. */
#ifndef EDGERNN_STDIO_H
#define EDGERNN_STDIO_H
#include <stddef.h>
typedef struct edgernn_file FILE;
extern FILE *const stdout;
extern FILE *const stderr;
#define _IOFBF 0
#define _IOLBF 1
#define _IONBF 2
#define BUFSIZ 256
#define EOF (-1)
int printf(const char *format, ...) __attribute__((format(printf, 1, 2)));
int putchar(int c);
int puts(const char *s);
int setvbuf(FILE *stream, char *buffer, int mode, size_t size);
int fflush(FILE *stream);
#endif
