/* A bare-metal anomaly scorer: a deployed forecast model (edgernn's anomaly task) steps through a
 * buffer of sensor samples, one sample at a time as a sensor interrupt would hand them over, and scores
 * each sample by how far it lands from the model's prediction of it.
 *
 * score_t = |x_t - prediction_{t-1}| / spread, where spread is the standard deviation of the prediction
 * error over the first CALIBRATION samples (clean signal): the same score as edgernn's AnomalyScorer,
 * calibrated on the device instead of from the training metadata.
 *
 * Build and run on the emulated Cortex-M4F:  make anomaly   (see README.md)
 */
#include <math.h>
#include <stdio.h>

#include "model.h"
#include "samples.h"

#if MODEL_INPUT_SIZE != 1 || MODEL_OUTPUT_SIZE != 1
#error "the scorer expects a model of one sensor channel (edgernn train --task anomaly on one column)"
#endif

#define CALIBRATION 256

static float errors[SAMPLES_COUNT];

/* Steps the model over the buffer; errors[t] is sample t's distance from its prediction (0 for t = 0). */
static int predict_all(model_state *state)
{
	float prediction = 0.0f, y[MODEL_OUTPUT_SIZE];
	int t, status;

	model_reset(state);
	for (t = 0; t < SAMPLES_COUNT; t++) {
		status = model_step(state, &samples[t], y);
		if (status != MODEL_OK) {
			printf("sample %d: model_step returned %d\n", t, status);
			return status;
		}
		errors[t] = t ? fabsf(samples[t] - prediction) : 0.0f;
		prediction = y[0];
	}
	return MODEL_OK;
}

static float calibrated_spread(void)
{
	float mean = 0.0f, variance = 0.0f;
	int t;

	for (t = 1; t < CALIBRATION; t++)
		mean += errors[t];
	mean /= (float)(CALIBRATION - 1);
	for (t = 1; t < CALIBRATION; t++)
		variance += (errors[t] - mean) * (errors[t] - mean);
	return sqrtf(variance / (float)(CALIBRATION - 2)) + 1e-6f;
}

int main(void)
{
	model_state state;
	float spread, top_score = 0.0f;
	int t, top = 0, row, inside;

	if (predict_all(&state) != MODEL_OK)
		return 1;
	spread = calibrated_spread();
	for (t = CALIBRATION; t < SAMPLES_COUNT; t++) {
		if (errors[t] / spread > top_score) {
			top_score = errors[t] / spread;
			top = t;
		}
	}
	row = SAMPLES_FIRST_ROW + top;
	inside = row >= SAMPLES_ANOMALY_FIRST_ROW - 100 && row <= SAMPLES_ANOMALY_LAST_ROW + 100;
	printf("scored %d samples (test rows %d-%d), %d bytes of model state\n", SAMPLES_COUNT, SAMPLES_FIRST_ROW,
	       SAMPLES_FIRST_ROW + SAMPLES_COUNT - 1, (int)sizeof state);
	printf("top score %.1f at row %d; labelled anomaly rows %d-%d: %s the window +-100\n", (double)top_score,
	       row, SAMPLES_ANOMALY_FIRST_ROW, SAMPLES_ANOMALY_LAST_ROW, inside ? "inside" : "outside");
	return 0;
}
