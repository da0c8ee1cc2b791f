/* Streams CSV rows from stdin through a deployed features model on this machine: one row per step, the
 * state carried from row to row, the outputs printed as a CSV row each.
 *
 * The first line is the header: the model's input columns are picked from it by name (model_columns,
 * the columns the model was trained on; a model without names takes the first MODEL_INPUT_SIZE fields).
 * The output starts with a header of the model's target names when it has them. A row with a missing or
 * non-numeric value, or one the model refuses (NaN, Inf), is reported on stderr and skipped, the state
 * left as it was.
 *
 *   make stream MODEL=anomaly.onnx < ../data/ucr_internalbleeding16_test.csv
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#if MODEL_VOCAB_SIZE != 0
#error "csv_stream needs a features model (token models take text: see chargen.c)"
#endif

#define LINE_BYTES 4096
#define MAX_FIELDS 256

/* Splits line in place at commas (and the line end) into at most MAX_FIELDS fields; returns their count. */
static int split(char *line, char **fields)
{
	int count = 0;

	line[strcspn(line, "\r\n")] = '\0';
	fields[count++] = line;
	while (count < MAX_FIELDS && (line = strchr(line, ',')) != NULL) {
		*line++ = '\0';
		fields[count++] = line;
	}
	return count;
}

/* The name of the model's input j; without names, fields are taken in order ("" never matches). */
static const char *column_name(int j)
{
#ifdef MODEL_NUM_COLUMNS
	return model_columns[j];
#else
	(void)j;
	return "";
#endif
}

/* column[j] = the field index of the model's input j in the header; 0 on success. */
static int find_columns(char *header, int *column)
{
	char *fields[MAX_FIELDS];
	int count = split(header, fields), j, k;

#ifndef MODEL_NUM_COLUMNS
	for (j = 0; j < MODEL_INPUT_SIZE; j++)
		column[j] = j;
	return count < MODEL_INPUT_SIZE;
#endif

	for (j = 0; j < MODEL_INPUT_SIZE; j++) {
		column[j] = -1;
		for (k = 0; k < count; k++)
			if (strcmp(fields[k], column_name(j)) == 0)
				column[j] = k;
		if (column[j] < 0) {
			fprintf(stderr, "header: expected a column named '%s' (the model's input %d)\n",
				column_name(j), j);
			return 1;
		}
	}
	return 0;
}

static void print_output_header(void)
{
#ifdef MODEL_NUM_TARGETS
	int j;

	for (j = 0; j < MODEL_NUM_TARGETS; j++)
		printf(j ? ",%s" : "%s", model_targets[j]);
	printf("\n");
#endif
}

/* x = the row's values of the model's columns; 0 on success, else a message on stderr. */
static int read_row(char *line, long row, const int *column, float *x)
{
	char *fields[MAX_FIELDS], *end;
	int count = split(line, fields), j;

	for (j = 0; j < MODEL_INPUT_SIZE; j++) {
		if (column[j] >= count) {
			fprintf(stderr, "row %ld: expected a value in column '%s', the row has %d fields\n", row,
				column_name(j), count);
			return 1;
		}
		x[j] = strtof(fields[column[j]], &end);
		if (end == fields[column[j]] || *end != '\0') {
			fprintf(stderr, "row %ld: column '%s': expected a number, got '%s'\n", row, column_name(j),
				fields[column[j]]);
			return 1;
		}
	}
	return 0;
}

int main(void)
{
	char line[LINE_BYTES];
	int column[MODEL_INPUT_SIZE], j, status;
	float x[MODEL_INPUT_SIZE], y[MODEL_OUTPUT_SIZE];
	long row = 0, skipped = 0;
	model_state state;

	if (!fgets(line, sizeof line, stdin) || find_columns(line, column))
		return 2;
	print_output_header();
	model_reset(&state);
	while (fgets(line, sizeof line, stdin)) {
		row++;
		if (read_row(line, row, column, x)) {
			skipped++;
			continue;
		}
		status = model_step(&state, x, y);
		if (status != MODEL_OK) {
			fprintf(stderr, "row %ld: the model refused it (status %d): state unchanged\n", row, status);
			skipped++;
			continue;
		}
		for (j = 0; j < MODEL_OUTPUT_SIZE; j++)
			printf(j ? ",%.7g" : "%.7g", (double)y[j]);
		printf("\n");
	}
	fprintf(stderr, "%ld rows streamed, %ld skipped\n", row - skipped, skipped);
	return 0;
}
