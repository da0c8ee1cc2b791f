/* exit and abort end the emulated program (firmware/libc.c and the start-up code). */
#ifndef EDGERNN_STDLIB_H
#define EDGERNN_STDLIB_H
#include <stddef.h>
void exit(int status) __attribute__((noreturn));
void abort(void) __attribute__((noreturn));
long atol(const char *s);
#endif
