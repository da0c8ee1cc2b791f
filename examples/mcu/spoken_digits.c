/* Spoken digits on the Cortex-M4F: a keyword model (edgernn train --task keyword, exported, deployed to C)
 * hears the recordings in digit_samples.h, a speaker it never trained on, one hop of raw samples a step
 * (the window, spectrum, mel bands and log are in the model's step), and prints each digit it heard and
 * when, one line per word as `edgernn stream` prints it: "TIME s<TAB>WORD<TAB>SCORE".
 *
 * The spotter is edgernn's (docs/keyword.md): each hop's logits to posteriors (softmax), each word's
 * posterior averaged over the last SMOOTH_MS, a word fires once that has been the best word's, at or
 * above THRESHOLD, for STABLE_MS, while the spotter is armed and at least REFRACTORY_MS after the last
 * detection; it re-arms when every word has fallen below half the threshold (with OTHER_WORD_REARMS 1,
 * also when another word fires after the refractory period). A detection's time is the end of the hop
 * that fired it. The "_none" class is never a word. */
#include "digit_samples.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#ifndef THRESHOLD
#define THRESHOLD 0.6f
#endif
#ifndef SMOOTH_MS
#define SMOOTH_MS 100 /* whole milliseconds */
#endif
#ifndef REFRACTORY_MS
#define REFRACTORY_MS 600
#endif
#ifndef STABLE_MS
#define STABLE_MS 100
#endif
#ifndef OTHER_WORD_REARMS
#define OTHER_WORD_REARMS 0
#endif

#define HOP MODEL_INPUT_SIZE
#define CLASSES MODEL_OUTPUT_SIZE
#define HOP_MS (1000.0 * HOP / DIGIT_SAMPLE_RATE)
/* hops in SMOOTH_MS (at least 1) and in REFRACTORY_MS, rounded to the nearest */
#define SPAN_RAW ((SMOOTH_MS * DIGIT_SAMPLE_RATE + 500 * HOP) / (1000 * HOP))
#define SPAN (SPAN_RAW > 0 ? SPAN_RAW : 1)
#define REFRACTORY ((REFRACTORY_MS * (long)DIGIT_SAMPLE_RATE + 500L * HOP) / (1000L * HOP))
/* hops a word must lead (at least 1), rounded to the nearest */
#define STABLE_RAW ((STABLE_MS * (long)DIGIT_SAMPLE_RATE + 500L * HOP) / (1000L * HOP))
#define STABLE (STABLE_RAW > 0 ? STABLE_RAW : 1)

static float window[SPAN][CLASSES]; /* the last SPAN hops' posteriors */

static void softmax(const float *logits, float *p)
{
	float top = logits[0], sum = 0.0f;
	int c;
	for (c = 1; c < CLASSES; c++)
		top = logits[c] > top ? logits[c] : top;
	for (c = 0; c < CLASSES; c++)
		sum += p[c] = expf(logits[c] - top);
	for (c = 0; c < CLASSES; c++)
		p[c] /= sum;
}

int main(void)
{
	static model_state state; /* static: the example keeps its RAM where `size` counts it */
	float x[HOP], y[CLASSES];
	long hops = 0, last_hop = -1, heard = 0, led = 0;
	int filled = 0, armed = 1, last_word = -1, leader = -1, no_word = -1, c;
	long i;

	for (c = 0; c < CLASSES; c++)
		if (strcmp(model_classes[c], "_none") == 0)
			no_word = c;
	model_reset(&state);
	printf("listening: %d samples at %d Hz, %d-sample hops, %d words spoken\n", DIGIT_SAMPLES_COUNT,
	       DIGIT_SAMPLE_RATE, HOP, DIGIT_WORDS);
	for (i = 0; i + HOP <= DIGIT_SAMPLES_COUNT; i += HOP) {
		float smoothed[CLASSES], score = -1.0f;
		int best = 0, rc, k;
		for (k = 0; k < HOP; k++)
			x[k] = (float)digit_samples[i + k] / 32768.0f;
		rc = model_step(&state, x, y);
		if (rc != MODEL_OK) {
			printf("step %ld failed: %d\n", hops, rc);
			return 1;
		}
		hops++;
		softmax(y, window[(hops - 1) % SPAN]);
		filled = filled < SPAN ? filled + 1 : SPAN;
		for (c = 0; c < CLASSES; c++) {
			float sum = 0.0f;
			for (k = 0; k < filled; k++)
				sum += window[k][c];
			smoothed[c] = c == no_word ? 0.0f : sum / (float)filled;
			if (smoothed[c] > score) {
				score = smoothed[c];
				best = c;
			}
		}
		if (score >= THRESHOLD) {
			led = best == leader ? led + 1 : 1;
			leader = best;
		} else {
			led = 0, leader = -1;
		}
		if (score < THRESHOLD / 2)
			armed = 1;
		if (score < THRESHOLD || led < STABLE || (last_hop >= 0 && hops - last_hop < REFRACTORY))
			continue;
		if (!armed && (best == last_word || !OTHER_WORD_REARMS))
			continue;
		armed = 0, last_hop = hops, last_word = best, heard++;
		printf("%.2f s\t%s\t%.3f\n", hops * HOP_MS / 1000.0, model_classes[best], (double)score);
	}
	printf("heard %ld word(s) in %.2f s of audio; spoken:", heard, (double)DIGIT_SAMPLES_COUNT / DIGIT_SAMPLE_RATE);
	for (c = 0; c < DIGIT_WORDS; c++)
		printf(" %s (%.2f-%.2f s)", digit_words[c], (double)digit_word_span[c][0] / DIGIT_SAMPLE_RATE,
		       (double)digit_word_span[c][1] / DIGIT_SAMPLE_RATE);
	printf("\n");
	return 0;
}
