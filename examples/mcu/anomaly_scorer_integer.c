/* The anomaly scorer of anomaly_scorer.c with no floating point at all, for a Cortex-M0+ (no FPU): the
 * model is deployed with --precision integer, the samples arrive as int16 at the model's input scale
 * (samples_integer.h, written by integer_m0.py from the deployed model's scales), and the score is
 * computed in integers too. Built with -DEDGERNN_NO_FLOAT: the model's float helpers are left out.
 *
 * error_t = |x_t - prediction_{t-1}|, the prediction brought to the input's scale by the fixed-point ratio
 * SAMPLES_OUTPUT_TO_INPUT_Q16; the top score is the largest error after the first CALIBRATION samples,
 * divided by their spread (standard deviation of the error), printed in tenths.
 *
 * Run:  python integer_m0.py   (see its docstring)
 */
#include <stdint.h>
#include <stdio.h>

#include "model.h"
#include "samples_integer.h"

#if MODEL_INPUT_SIZE != 1 || MODEL_OUTPUT_SIZE != 1 || !defined(MODEL_PRECISION_INTEGER)
#error "the scorer expects an integer model of one sensor channel (edgernn train --task anomaly on one column)"
#endif

#define CALIBRATION 256

static int32_t errors[SAMPLES_COUNT];

static uint32_t isqrt(uint64_t v) /* the largest r with r * r <= v */
{
	uint64_t r = 0, bit = (uint64_t)1 << 62;
	while (bit > v)
		bit >>= 2;
	while (bit) {
		if (v >= r + bit) {
			v -= r + bit;
			r = (r >> 1) + bit;
		} else {
			r >>= 1;
		}
		bit >>= 2;
	}
	return (uint32_t)r;
}

static int predict_all(model_state *state)
{
	int32_t prediction = 0;
	int16_t y[MODEL_OUTPUT_SIZE];
	int t, status;

	model_reset(state);
	for (t = 0; t < SAMPLES_COUNT; t++) {
		int32_t error = samples[t] - prediction;
		status = model_step(state, &samples[t], y);
		if (status != MODEL_OK) {
			printf("sample %d: model_step returned %d\n", t, status);
			return status;
		}
		errors[t] = t ? (error < 0 ? -error : error) : 0;
		prediction = (int32_t)(((int64_t)y[0] * SAMPLES_OUTPUT_TO_INPUT_Q16 + 32768) >> 16);
	}
	return MODEL_OK;
}

int main(void)
{
	model_state state;
	int64_t sum = 0, squares = 0, n = CALIBRATION - 1;
	uint32_t spread;
	int32_t top_error = 0;
	int t, top = 0, row, inside, tenths;

	if (predict_all(&state) != MODEL_OK)
		return 1;
	for (t = 1; t < CALIBRATION; t++) {
		sum += errors[t];
		squares += (int64_t)errors[t] * errors[t];
	}
	spread = isqrt((uint64_t)((squares * n - sum * sum) / (n * (n - 1)))) + 1;
	for (t = CALIBRATION; t < SAMPLES_COUNT; t++) {
		if (errors[t] > top_error) {
			top_error = errors[t];
			top = t;
		}
	}
	tenths = (int)((10 * (int64_t)top_error + spread / 2) / spread);
	row = SAMPLES_FIRST_ROW + top;
	inside = row >= SAMPLES_ANOMALY_FIRST_ROW - 100 && row <= SAMPLES_ANOMALY_LAST_ROW + 100;
	printf("scored %d samples (test rows %d-%d) in integers, %d bytes of model state\n", SAMPLES_COUNT,
	       SAMPLES_FIRST_ROW, SAMPLES_FIRST_ROW + SAMPLES_COUNT - 1, (int)sizeof state);
	printf("top score %d.%d at row %d; labelled anomaly rows %d-%d: %s the window +-100\n", tenths / 10,
	       tenths % 10, row, SAMPLES_ANOMALY_FIRST_ROW, SAMPLES_ANOMALY_LAST_ROW, inside ? "inside" : "outside");
	return 0;
}
