/* The <math.h> subset the generated C may call. The compiler's builtins where the core has an
 * instruction (fabs, sqrt with an FPU); the rest in firmware/libm.c (float, within 2 ulp of the
 * correctly rounded value; the host's libm may differ in the last bit). */
#ifndef EDGERNN_MATH_H
#define EDGERNN_MATH_H
#define NAN (__builtin_nanf(""))
#define INFINITY (__builtin_inff())
#define HUGE_VALF (__builtin_huge_valf())
#define HUGE_VAL (__builtin_huge_val())
#define isnan(x) __builtin_isnan(x)
#define isinf(x) __builtin_isinf(x)
#define isfinite(x) __builtin_isfinite(x)
#define fabsf(x) __builtin_fabsf(x)
#define fabs(x) __builtin_fabs(x)
float sqrtf(float x);
float expf(float x);
float logf(float x);
float log1pf(float x);
float powf(float x, float y);
float floorf(float x);
float ceilf(float x);
float fmaxf(float a, float b);
float fminf(float a, float b);
float tanhf(float x);
double sqrt(double x);
#endif
