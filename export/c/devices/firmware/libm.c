/* The float math functions the generated C may call for ops outside the recurrent cells (Log, Pow, Sqrt,
 * Softplus, LogSoftmax...). The GRU and LSTM cells never call them (the generated C has its own exp).
 * Computed in double and rounded once: within an ulp of the correctly rounded float, which the host's
 * libm may round the other way. */
#include <math.h>

static double exp_double(double x)
{
	/* e^x = 2^k * e^r, |r| <= ln2/2, e^r by its Taylor series to 1e-17 */
	const double ln2 = 0.69314718055994530942;
	double r, term, sum;
	int k, i;

	if (x > 709.0)
		return HUGE_VAL;
	if (x < -745.0)
		return 0.0;
	k = (int)(x / ln2 + (x < 0 ? -0.5 : 0.5));
	r = x - k * ln2;
	term = 1.0, sum = 1.0;
	for (i = 1; i < 18; i++) {
		term *= r / i;
		sum += term;
	}
	for (; k > 0; k--)
		sum *= 2.0;
	for (; k < 0; k++)
		sum *= 0.5;
	return sum;
}

static double log_double(double x)
{
	/* x = m * 2^k, m in [sqrt(1/2), sqrt(2)); log m = 2 atanh((m-1)/(m+1)) */
	const double ln2 = 0.69314718055994530942;
	double m = x, s, s2, term, sum;
	int k = 0, i;

	while (m >= 1.4142135623730951)
		m *= 0.5, k++;
	while (m < 0.7071067811865476)
		m *= 2.0, k--;
	s = (m - 1.0) / (m + 1.0);
	s2 = s * s;
	term = s, sum = 0.0;
	for (i = 1; i < 40; i += 2) {
		sum += term / i;
		term *= s2;
	}
	return 2.0 * sum + k * ln2;
}

float expf(float x)
{
	if (x != x)
		return x;
	return (float)exp_double((double)x);
}

float logf(float x)
{
	if (x != x || x < 0.0f)
		return NAN;
	if (x == 0.0f)
		return -HUGE_VALF;
	if (x == HUGE_VALF)
		return x;
	return (float)log_double((double)x);
}

float log1pf(float x)
{
	double y = 1.0 + (double)x;
	if (x != x || x < -1.0f)
		return NAN;
	if (x == -1.0f)
		return -HUGE_VALF;
	if (x == HUGE_VALF)
		return x;
	/* log(1+x) with the rounding of 1+x corrected */
	return (float)(log_double(y) - ((y - 1.0) - (double)x) / y);
}

double sqrt(double x)
{
	double r;
	int i;
	if (x != x || x < 0.0)
		return (double)NAN;
	if (x == 0.0 || x > 1.7976931348623157e308)
		return x;
	r = x > 1.0 ? x : 1.0;
	for (i = 0; i < 1100 && r * r > x * (1.0 + 1e-16); i++)
		r = 0.5 * (r + x / r);
	for (i = 0; i < 3; i++)
		r = 0.5 * (r + x / r);
	return r;
}

float sqrtf(float x)
{
	return (float)sqrt((double)x);
}

float powf(float x, float y)
{
	double ax = x < 0.0f ? -(double)x : (double)x, r;
	long n;
	if (y == 0.0f)
		return 1.0f;
	if (x != x || y != y)
		return NAN;
	if (x == 0.0f)
		return y > 0.0f ? 0.0f : HUGE_VALF;
	n = (long)y;
	if (x < 0.0f && (float)n != y)
		return NAN;
	r = exp_double((double)y * log_double(ax));
	return (float)(x < 0.0f && (n & 1) ? -r : r);
}

float floorf(float x)
{
	float t;
	if (!(x > -8388608.0f && x < 8388608.0f))
		return x;
	t = (float)(long)x;
	return t > x ? t - 1.0f : t;
}

float ceilf(float x)
{
	float t;
	if (!(x > -8388608.0f && x < 8388608.0f))
		return x;
	t = (float)(long)x;
	return t < x ? t + 1.0f : t;
}

float fmaxf(float a, float b)
{
	if (a != a)
		return b;
	if (b != b)
		return a;
	return a > b ? a : b;
}

float fminf(float a, float b)
{
	if (a != a)
		return b;
	if (b != b)
		return a;
	return a < b ? a : b;
}

float tanhf(float x)
{
	double e;
	if (x != x)
		return x;
	if (x > 20.0f)
		return 1.0f;
	if (x < -20.0f)
		return -1.0f;
	e = exp_double(2.0 * (double)x);
	return (float)((e - 1.0) / (e + 1.0));
}
