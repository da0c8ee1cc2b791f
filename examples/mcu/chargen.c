/* Text generation on a bare-metal Cortex-M4F: a deployed character model reads PROMPT, then writes
 * CHARS characters, each drawn from the model's next-character distribution (softmax at TEMPERATURE,
 * a seeded generator: the same text on every run; SEED 0 takes the most likely character instead).
 * Characters go out through semihosting as they come.
 *
 * Build and run on the emulated Cortex-M4F:  make chargen CHAR_MODEL=shakespeare.onnx   (README.md)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "model.h"

#ifndef PROMPT
#define PROMPT "ROMEO:"
#endif
#ifndef CHARS
#define CHARS 300
#endif
#ifndef SEED
#define SEED 7
#endif
#ifndef TEMPERATURE
#define TEMPERATURE 0.8f
#endif

#if MODEL_VOCAB_SIZE == 0
#error "chargen needs a token model (edgernn train --task charlm)"
#endif

/* The token whose text is the longest prefix of text (-1: none); *length: its bytes. */
static int token_at(const char *text, size_t *length)
{
	int token, best = -1;
	size_t best_length = 0;

	for (token = 0; token < MODEL_VOCAB_SIZE; token++) {
		size_t n = strlen(model_vocabulary[token]);
		if (n > best_length && strncmp(text, model_vocabulary[token], n) == 0) {
			best = token;
			best_length = n;
		}
	}
	*length = best_length;
	return best;
}

static float uniform(uint32_t *seed)
{
	*seed ^= *seed << 13;
	*seed ^= *seed >> 17;
	*seed ^= *seed << 5;
	return (float)(*seed >> 8) / 16777216.0f;
}

static int next_token(const float *logits, uint32_t *seed)
{
	float weights[MODEL_VOCAB_SIZE], top = logits[0], total = 0.0f, draw;
	int token, best = 0;

	for (token = 1; token < MODEL_VOCAB_SIZE; token++) {
		if (logits[token] > top) {
			top = logits[token];
			best = token;
		}
	}
	if (SEED == 0)
		return best;
	for (token = 0; token < MODEL_VOCAB_SIZE; token++) {
		weights[token] = expf((logits[token] - top) / TEMPERATURE);
		total += weights[token];
	}
	draw = uniform(seed) * total;
	for (token = 0; token < MODEL_VOCAB_SIZE - 1; token++) {
		draw -= weights[token];
		if (draw < 0.0f)
			return token;
	}
	return MODEL_VOCAB_SIZE - 1;
}

int main(void)
{
	model_state state;
	float logits[MODEL_OUTPUT_SIZE];
	const char *text = PROMPT;
	uint32_t seed = SEED ? (uint32_t)SEED : 1u;
	size_t length;
	int token = -1, i;

	model_reset(&state);
	while (*text) {
		token = token_at(text, &length);
		if (token < 0) {
			printf("\nprompt: %.8s... is not in the model's vocabulary\n", text);
			return 1;
		}
		if (model_step_token(&state, token, logits) != MODEL_OK)
			return 1;
		text += length;
	}
	if (token < 0)
		return 1; /* an empty prompt: nothing to continue */
	fputs(PROMPT, stdout);
	for (i = 0; i < CHARS; i++) {
		token = next_token(logits, &seed);
		fputs(model_vocabulary[token], stdout);
		if (model_step_token(&state, token, logits) != MODEL_OK)
			return 1;
	}
	printf("\n");
	return 0;
}
