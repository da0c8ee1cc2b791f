/* The little C library a bare-metal device build needs (no newlib, no picolibc): the string functions
 * gcc calls from the generated C (memcpy, memset), printf for the self-test and the harnesses, exit.
 * Output goes through edgernn_console_write and the program ends through edgernn_exit, both in the
 * device's start-up code (semihosting on Arm, the UART and the test device on RISC-V). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void edgernn_console_write(const char *text, size_t length);
void edgernn_exit(int status) __attribute__((noreturn));

void *memcpy(void *to, const void *from, size_t n)
{
	unsigned char *d = to;
	const unsigned char *s = from;

	if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
		uint32_t *dw = (uint32_t *)to;
		const uint32_t *sw = (const uint32_t *)from;
#if defined(__thumb2__)
		for (; n >= 16; n -= 16) { /* four words a pass in one LDM and one STM, as C libraries do (gcc
		                             * makes four loads and four stores of the C below) */
			register uint32_t a __asm__("r3"), b __asm__("r4"), c __asm__("r5"), e __asm__("r6");
			__asm__ volatile("ldmia %0!, {%2, %3, %4, %5}\n\tstmia %1!, {%2, %3, %4, %5}"
			                 : "+r"(sw), "+r"(dw), "=&r"(a), "=&r"(b), "=&r"(c), "=&r"(e)
			                 :
			                 : "memory");
		}
#else
		for (; n >= 16; n -= 16) { /* four words a pass, as C libraries do */
			const uint32_t a = sw[0], b = sw[1], c = sw[2], e = sw[3];
			dw[0] = a;
			dw[1] = b;
			dw[2] = c;
			dw[3] = e;
			dw += 4;
			sw += 4;
		}
#endif
		for (; n >= 4; n -= 4)
			*dw++ = *sw++;
		d = (unsigned char *)dw;
		s = (const unsigned char *)sw;
	}
	while (n--)
		*d++ = *s++;
	return to;
}

void *memmove(void *to, const void *from, size_t n)
{
	unsigned char *d = to;
	const unsigned char *s = from;

	if (d <= s || d >= s + n)
		return memcpy(to, from, n);
	while (n--)
		d[n] = s[n];
	return to;
}

void *memset(void *to, int value, size_t n)
{
	unsigned char *d = to;
	const unsigned char byte = (unsigned char)value;

	if (((uintptr_t)d & 3u) == 0) {
		uint32_t *dw = (uint32_t *)to, word = byte * 0x01010101u;
		for (; n >= 4; n -= 4)
			*dw++ = word;
		d = (unsigned char *)dw;
	}
	while (n--)
		*d++ = byte;
	return to;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x < *y ? -1 : 1;
	return 0;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (unsigned char)*a - (unsigned char)*b;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

long atol(const char *s)
{
	long v = 0;
	int negative = *s == '-';
	for (s += negative || *s == '+'; *s >= '0' && *s <= '9'; s++)
		v = 10 * v + (*s - '0');
	return negative ? -v : v;
}

void exit(int status)
{
	edgernn_exit(status);
}

void abort(void)
{
	edgernn_exit(134);
}

/* --- printf: one line buffered, flushed at a newline or when full ------------------------------------ */

static char line[256];
static size_t used;

static void flush(void)
{
	if (used)
		edgernn_console_write(line, used);
	used = 0;
}

static void emit(char c)
{
	line[used++] = c;
	if (c == '\n' || used == sizeof line)
		flush();
}

struct edgernn_file {
	int unused;
};
static struct edgernn_file console_file;
FILE *const stdout = &console_file;
FILE *const stderr = &console_file;

int setvbuf(FILE *stream, char *buffer, int mode, size_t size)
{
	(void)stream, (void)buffer, (void)size;
	return mode == _IOFBF || mode == _IOLBF || mode == _IONBF ? 0 : -1;
}

int fflush(FILE *stream)
{
	(void)stream;
	flush();
	return 0;
}

int putchar(int c)
{
	emit((char)c);
	return c;
}

int puts(const char *s)
{
	while (*s)
		emit(*s++);
	emit('\n');
	return 0;
}

static int emit_unsigned(unsigned long long v, unsigned base, int width, char pad)
{
	char digits[24];
	int n = 0, written = 0;
	do {
		digits[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	for (; width > n; width--, written++)
		emit(pad);
	while (n)
		emit(digits[--n]), written++;
	return written;
}

/* Decimal digits of |v| (finite, > 0): `count` significant digits rounded, and the decimal exponent of
 * the first. Scaling by powers of ten in double keeps about 15 correct digits: enough for %.9g. */
static int decimal_digits(double v, int count, char *digits)
{
	int exponent = 0, i;
	unsigned long long whole;
	double scaled;

	while (v >= 1e16)
		v /= 1e16, exponent += 16;
	while (v >= 10.0)
		v /= 10.0, exponent++;
	while (v < 1e-16)
		v *= 1e16, exponent -= 16;
	while (v < 1.0)
		v *= 10.0, exponent--;
	scaled = v;
	for (i = 1; i < count; i++)
		scaled *= 10.0;
	whole = (unsigned long long)(scaled + 0.5);
	{
		unsigned long long limit = 1;
		for (i = 0; i < count; i++)
			limit *= 10;
		if (whole >= limit)
			whole /= 10, exponent++;
	}
	for (i = count - 1; i >= 0; i--) {
		digits[i] = (char)('0' + whole % 10);
		whole /= 10;
	}
	return exponent;
}

static int emit_double(double v, int precision, char conversion)
{
	char digits[40];
	int written = 0, exponent, count, i, fixed;

	if (v != v) {
		emit('n'), emit('a'), emit('n');
		return 3;
	}
	if (v < 0 || (v == 0 && 1.0 / v < 0)) {
		emit('-'), written++;
		v = -v;
	}
	if (v > 1.7976931348623157e308) {
		emit('i'), emit('n'), emit('f');
		return written + 3;
	}
	if (precision < 0)
		precision = 6;
	if (conversion == 'f') {
		/* fixed point: integer part, then `precision` decimals (values below 2^63 only) */
		double scale = 1.0;
		unsigned long long whole, fraction;
		for (i = 0; i < precision; i++)
			scale *= 10.0;
		whole = (unsigned long long)v;
		fraction = (unsigned long long)((v - (double)whole) * scale + 0.5);
		if ((double)fraction >= scale)
			whole++, fraction = 0;
		written += emit_unsigned(whole, 10, 0, ' ');
		if (precision) {
			emit('.'), written++;
			written += emit_unsigned(fraction, 10, precision, '0');
		}
		return written;
	}
	if (conversion == 'g' && precision == 0)
		precision = 1;
	count = conversion == 'e' ? precision + 1 : precision;
	if (count > 17)
		count = 17;
	if (v == 0) {
		for (i = 0; i < count; i++)
			digits[i] = '0';
		exponent = 0;
	} else {
		exponent = decimal_digits(v, count, digits);
	}
	fixed = conversion == 'g' && exponent >= -4 && exponent < precision;
	if (conversion == 'g')
		while (count > 1 && digits[count - 1] == '0')
			count--;
	if (fixed) {
		if (exponent < 0) {
			emit('0'), emit('.'), written += 2;
			for (i = -1; i > exponent; i--)
				emit('0'), written++;
			for (i = 0; i < count; i++)
				emit(digits[i]), written++;
		} else {
			for (i = 0; i <= exponent; i++)
				emit(i < count ? digits[i] : '0'), written++;
			if (count > exponent + 1) {
				emit('.'), written++;
				for (; i < count; i++)
					emit(digits[i]), written++;
			}
		}
		return written;
	}
	emit(digits[0]), written++;
	if (count > 1) {
		emit('.'), written++;
		for (i = 1; i < count; i++)
			emit(digits[i]), written++;
	}
	emit('e'), emit(exponent < 0 ? '-' : '+'), written += 2;
	written += emit_unsigned((unsigned long long)(exponent < 0 ? -exponent : exponent), 10, 2, '0');
	return written;
}

int printf(const char *format, ...)
{
	va_list args;
	int written = 0;

	va_start(args, format);
	for (; *format; format++) {
		int longs = 0, width = 0, precision = -1;
		char pad = ' ';
		if (*format != '%') {
			emit(*format), written++;
			continue;
		}
		format++;
		if (*format == '0')
			pad = '0', format++;
		while (*format >= '0' && *format <= '9')
			width = 10 * width + (*format++ - '0');
		if (*format == '.') {
			precision = 0;
			for (format++; *format >= '0' && *format <= '9'; format++)
				precision = 10 * precision + (*format - '0');
		}
		while (*format == 'l')
			longs++, format++;
		switch (*format) {
		case 'd':
		case 'i': {
			long long v = longs > 1 ? va_arg(args, long long) : longs ? va_arg(args, long) : va_arg(args, int);
			if (v < 0)
				emit('-'), written++, width--;
			written += emit_unsigned(v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v, 10, width, pad);
			break;
		}
		case 'u':
		case 'x': {
			unsigned long long v = longs > 1 ? va_arg(args, unsigned long long)
			                       : longs  ? va_arg(args, unsigned long)
			                                : va_arg(args, unsigned);
			written += emit_unsigned(v, *format == 'x' ? 16 : 10, width, pad);
			break;
		}
		case 's': {
			const char *s = va_arg(args, const char *);
			while (*s)
				emit(*s++), written++;
			break;
		}
		case 'c':
			emit((char)va_arg(args, int)), written++;
			break;
		case 'g':
		case 'e':
		case 'f':
			written += emit_double(va_arg(args, double), precision, *format);
			break;
		case '%':
			emit('%'), written++;
			break;
		default:
			emit('?'), written++;
			break;
		}
	}
	va_end(args);
	flush();
	return written;
}
