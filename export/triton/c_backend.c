/* libtriton_edgernn.so: a Triton backend around one model's generated C (model.h / model.c, written by
 * edgernn's C target), for the sequence batcher's oldest strategy. Written into REPO/NAME/1/ by
 * `edgernn deploy --target triton --backend c`, which builds it there; tritonserver finds a backend's
 * library in the model's version folder before its backend directory.
 *
 * Each model instance keeps EDGERNN_SLOTS stream states (model_state), keyed by the correlation ID
 * Triton passes in the CORRID control input. START takes a free slot (or resets the sequence's own) at
 * the initial state; END frees it after the step; READY 0 steps nothing; a sequence idle for longer than
 * EDGERNN_IDLE_US (Triton has forgotten it too) is freed when a slot is needed. A bad request (wrong
 * size or type, a token out of range, an input or a step that is not finite, an unknown sequence) gets
 * an error response and leaves its state as it was; no other request in the batch is touched. Each
 * request's and each batch's times go to Triton's statistics (the statistics API, /metrics,
 * perf_analyzer).
 *
 * The TRITONBACKEND / TRITONSERVER C API it calls is declared below (API 1.19, tritonserver 2.51 and
 * later; the entry points are resolved in the tritonserver process when the library is loaded). */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

#ifndef EDGERNN_SLOTS
#define EDGERNN_SLOTS 2048
#endif
#ifndef EDGERNN_IDLE_US
#define EDGERNN_IDLE_US 60000000
#endif

/* --- the Triton C API used here ----------------------------------------------------------------- */

typedef struct TRITONSERVER_Error TRITONSERVER_Error;
typedef struct TRITONBACKEND_Backend TRITONBACKEND_Backend;
typedef struct TRITONBACKEND_ModelInstance TRITONBACKEND_ModelInstance;
typedef struct TRITONBACKEND_Request TRITONBACKEND_Request;
typedef struct TRITONBACKEND_Response TRITONBACKEND_Response;
typedef struct TRITONBACKEND_Input TRITONBACKEND_Input;
typedef struct TRITONBACKEND_Output TRITONBACKEND_Output;
typedef int TRITONSERVER_DataType;   /* an enum in Triton's headers */
typedef int TRITONSERVER_MemoryType; /* an enum in Triton's headers */

#define API_MAJOR 1
#define API_MINOR 19
#define TYPE_INT32 8
#define TYPE_UINT64 5
#define TYPE_INT64 9
#define TYPE_FP32 11
#define MEMORY_CPU 0
#define ERROR_INTERNAL 1
#define ERROR_INVALID_ARG 3
#define ERROR_UNSUPPORTED 5
#define RESPONSE_COMPLETE_FINAL 1u
#define REQUEST_RELEASE_ALL 1u

#define LOG_INFO 0
extern TRITONSERVER_Error *TRITONSERVER_LogMessage(int level, const char *file, int line, const char *message);
extern TRITONSERVER_Error *TRITONSERVER_ErrorNew(int code, const char *message);
extern void TRITONSERVER_ErrorDelete(TRITONSERVER_Error *error);
extern TRITONSERVER_Error *TRITONBACKEND_ApiVersion(uint32_t *major, uint32_t *minor);
extern TRITONSERVER_Error *TRITONBACKEND_ModelInstanceState(TRITONBACKEND_ModelInstance *, void **);
extern TRITONSERVER_Error *TRITONBACKEND_ModelInstanceSetState(TRITONBACKEND_ModelInstance *, void *);
extern TRITONSERVER_Error *TRITONBACKEND_RequestInput(TRITONBACKEND_Request *, const char *,
                                                      TRITONBACKEND_Input **);
extern TRITONSERVER_Error *TRITONBACKEND_InputProperties(TRITONBACKEND_Input *, const char **,
                                                         TRITONSERVER_DataType *, const int64_t **,
                                                         uint32_t *, uint64_t *, uint32_t *);
extern TRITONSERVER_Error *TRITONBACKEND_InputBuffer(TRITONBACKEND_Input *, uint32_t, const void **,
                                                     uint64_t *, TRITONSERVER_MemoryType *, int64_t *);
extern TRITONSERVER_Error *TRITONBACKEND_RequestRelease(TRITONBACKEND_Request *, uint32_t);
extern TRITONSERVER_Error *TRITONBACKEND_ResponseNew(TRITONBACKEND_Response **, TRITONBACKEND_Request *);
extern TRITONSERVER_Error *TRITONBACKEND_ResponseOutput(TRITONBACKEND_Response *, TRITONBACKEND_Output **,
                                                        const char *, TRITONSERVER_DataType,
                                                        const int64_t *, uint32_t);
extern TRITONSERVER_Error *TRITONBACKEND_OutputBuffer(TRITONBACKEND_Output *, void **, uint64_t,
                                                      TRITONSERVER_MemoryType *, int64_t *);
extern TRITONSERVER_Error *TRITONBACKEND_ResponseSend(TRITONBACKEND_Response *, uint32_t,
                                                      TRITONSERVER_Error *);

extern TRITONSERVER_Error *TRITONBACKEND_ModelInstanceReportStatistics(TRITONBACKEND_ModelInstance *,
								       TRITONBACKEND_Request *, _Bool success,
								       uint64_t exec_start_ns,
								       uint64_t compute_start_ns,
								       uint64_t compute_end_ns, uint64_t exec_end_ns);
extern TRITONSERVER_Error *TRITONBACKEND_ModelInstanceReportBatchStatistics(TRITONBACKEND_ModelInstance *,
									    uint64_t batch_size,
									    uint64_t exec_start_ns,
									    uint64_t compute_start_ns,
									    uint64_t compute_end_ns,
									    uint64_t exec_end_ns);

#define EXPORT __attribute__((visibility("default")))

/* --- the model's step, for the best x86-64 level the CPU has ------------------------------------ */

#ifdef EDGERNN_LEVELS /* model.c built three times, its names suffixed (see c_flavour.py) */
#define LEVEL_DECLARATIONS(suffix)                                                                     \
	void model_reset_##suffix(model_state *st);                                                    \
	int model_step_##suffix(model_state *st, const float *x, float *y);                            \
	int model_step_token_##suffix(model_state *st, int32_t token, float *y);
LEVEL_DECLARATIONS(vnni)
LEVEL_DECLARATIONS(avx2)
LEVEL_DECLARATIONS(base)
static void (*reset_fn)(model_state *) = model_reset_base;
static int (*step_fn)(model_state *, const float *, float *) = model_step_base;
static int (*step_token_fn)(model_state *, int32_t, float *) = model_step_token_base;

static const char *choose_level(void)
{
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
	    __builtin_cpu_supports("avx512vnni")) {
		reset_fn = model_reset_vnni, step_fn = model_step_vnni, step_token_fn = model_step_token_vnni;
		return "x86-64-v4 with AVX-512 VNNI";
	}
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2")) {
		reset_fn = model_reset_avx2, step_fn = model_step_avx2, step_token_fn = model_step_token_avx2;
		return "x86-64-v3 (AVX2, FMA)";
	}
	return "x86-64 (SSE2)";
}
#elif defined(MODEL_PRECISION_INTEGER) /* integer-only C: float requests in and out, integers inside */
/* The C's own helpers convert at the edges: x quantized at the header's input scales (rounded,
 * saturated), y converted back with MODEL_OUTPUT_SCALE; the state stays the C's int16 state. An input
 * that is not finite is refused before it is quantized (the float C refuses it too), the state untouched. */
static int integer_step(model_state *st, const float *x, float *y)
{
#if MODEL_VOCAB_SIZE > 0
	(void)st, (void)x, (void)y;
	return MODEL_ERR_KIND;
#else
	int16_t xq[MODEL_INPUT_SIZE], yq[MODEL_OUTPUT_SIZE];
	for (int i = 0; i < MODEL_INPUT_SIZE; i++)
		if (!(x[i] - x[i] == 0.0f)) /* NaN or +-inf */
			return 2;
	model_quantize_input(x, xq);
	const int rc = model_step(st, xq, yq);
	if (rc == MODEL_OK)
		model_dequantize_output(yq, y);
	return rc;
#endif
}

static int integer_step_token(model_state *st, int32_t token, float *y)
{
	int16_t yq[MODEL_OUTPUT_SIZE];
	const int rc = model_step_token(st, token, yq);
	if (rc == MODEL_OK)
		model_dequantize_output(yq, y);
	return rc;
}
#define reset_fn model_reset
#define step_fn integer_step
#define step_token_fn integer_step_token
static const char *choose_level(void) { return "this machine's default (integer-only: no float in a step)"; }
#else
#define reset_fn model_reset
#define step_fn model_step
#define step_token_fn model_step_token
static const char *choose_level(void) { return "this machine's default"; }
#endif

/* --- the streams of one model instance ---------------------------------------------------------- */

/* The IDs and times sit apart from the states, so that finding a sequence reads 16 KB, not every state. */
typedef struct {
	uint64_t corrid[EDGERNN_SLOTS]; /* 0: free */
	int64_t seen_us[EDGERNN_SLOTS]; /* the time of its last request */
	model_state state[EDGERNN_SLOTS];
} streams;

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t); /* Triton's statistics clock (steady_clock) */
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int find(const streams *s, uint64_t corrid)
{
	for (int i = 0; i < EDGERNN_SLOTS; i++)
		if (s->corrid[i] == corrid)
			return i;
	return -1;
}

/* A free slot, else the one idle the longest if idle for longer than the timeout (Triton has freed
 * that sequence too; the server log says so); -1 if none. */
static int take(streams *s, int64_t now)
{
	int oldest = -1;
	for (int i = 0; i < EDGERNN_SLOTS; i++) {
		if (s->corrid[i] == 0)
			return i;
		if (now - s->seen_us[i] > EDGERNN_IDLE_US && (oldest < 0 || s->seen_us[i] < s->seen_us[oldest]))
			oldest = i;
	}
	if (oldest >= 0) {
		char message[160];
		snprintf(message, sizeof message, "edgernn backend: freed sequence %llu, idle for more than %g s",
			 (unsigned long long)s->corrid[oldest], EDGERNN_IDLE_US / 1e6);
		TRITONSERVER_Error *err = TRITONSERVER_LogMessage(LOG_INFO, __FILE__, __LINE__, message);
		if (err != NULL)
			TRITONSERVER_ErrorDelete(err);
	}
	return oldest;
}

/* --- entry points ------------------------------------------------------------------------------- */

EXPORT TRITONSERVER_Error *TRITONBACKEND_Initialize(TRITONBACKEND_Backend *backend)
{
	uint32_t major = 0, minor = 0;
	(void)backend;
	TRITONSERVER_Error *err = TRITONBACKEND_ApiVersion(&major, &minor);
	if (err != NULL)
		return err;
	if (major != API_MAJOR || minor < API_MINOR) {
		char message[160];
		snprintf(message, sizeof message,
			 "edgernn backend: built for TRITONBACKEND API %d.%d or a later 1.x, the server has %u.%u",
			 API_MAJOR, API_MINOR, major, minor);
		return TRITONSERVER_ErrorNew(ERROR_UNSUPPORTED, message);
	}
	char message[160];
	snprintf(message, sizeof message, "edgernn backend: the model's step built for %s", choose_level());
	err = TRITONSERVER_LogMessage(LOG_INFO, __FILE__, __LINE__, message);
	if (err != NULL)
		TRITONSERVER_ErrorDelete(err);
	return NULL;
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance *instance)
{
	streams *s = calloc(1, sizeof(streams));
	if (s == NULL)
		return TRITONSERVER_ErrorNew(ERROR_INTERNAL, "edgernn backend: out of memory for the streams");
	return TRITONBACKEND_ModelInstanceSetState(instance, s);
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance *instance)
{
	void *s = NULL;
	TRITONSERVER_Error *err = TRITONBACKEND_ModelInstanceState(instance, &s);
	if (err != NULL)
		return err;
	free(s);
	return NULL;
}

/* The bytes of input ``name``: NULL with ``why`` set when it is missing, not on the CPU or not
 * ``bytes`` long of type ``type``. */
static const void *input(TRITONBACKEND_Request *r, const char *name, TRITONSERVER_DataType type,
			 uint64_t bytes, char *why, size_t room)
{
	TRITONBACKEND_Input *in = NULL;
	TRITONSERVER_DataType got = 0;
	uint64_t size = 0;
	uint32_t buffers = 0;
	const void *data = NULL;
	uint64_t data_size = 0;
	TRITONSERVER_MemoryType memory = MEMORY_CPU;
	int64_t memory_id = 0;
	TRITONSERVER_Error *err = TRITONBACKEND_RequestInput(r, name, &in);
	if (err == NULL)
		err = TRITONBACKEND_InputProperties(in, NULL, &got, NULL, NULL, &size, &buffers);
	if (err != NULL) {
		TRITONSERVER_ErrorDelete(err);
		snprintf(why, room, "input %s: missing", name);
		return NULL;
	}
	if (got != type || size != bytes || buffers != 1) {
		snprintf(why, room, "input %s: expected %llu bytes of %s, got %llu bytes of type %d", name,
			 (unsigned long long)bytes, type == TYPE_FP32 ? "FP32" : type == TYPE_INT64 ? "INT64" : "INT32/UINT64",
			 (unsigned long long)size, got);
		return NULL;
	}
	err = TRITONBACKEND_InputBuffer(in, 0, &data, &data_size, &memory, &memory_id);
	if (err != NULL || memory != MEMORY_CPU || data_size != bytes) {
		if (err != NULL)
			TRITONSERVER_ErrorDelete(err);
		snprintf(why, room, "input %s: not readable in CPU memory", name);
		return NULL;
	}
	return data;
}

/* One request: the error message in ``why`` (and a nonzero return) or y stepped into ``y``. */
static int serve(streams *s, TRITONBACKEND_Request *r, int64_t now, float *y, int *stepped, char *why,
		 size_t room)
{
	const int32_t *start = input(r, "START", TYPE_INT32, 4, why, room);
	const int32_t *end = start ? input(r, "END", TYPE_INT32, 4, why, room) : NULL;
	const int32_t *ready = end ? input(r, "READY", TYPE_INT32, 4, why, room) : NULL;
	const uint64_t *corrid = ready ? input(r, "CORRID", TYPE_UINT64, 8, why, room) : NULL;
	if (corrid == NULL)
		return 1;
	*stepped = 0;
	if (*corrid == 0) {
		snprintf(why, room, "expected a request with a correlation ID (sequence_id), got none");
		return 1;
	}
	if (!*ready)
		return 0; /* the slot holds no request: nothing steps */
	const void *x;
	if (MODEL_VOCAB_SIZE > 0)
		x = input(r, "x", TYPE_INT64, 8, why, room);
	else
		x = input(r, "x", TYPE_FP32, 4 * MODEL_INPUT_SIZE, why, room);
	if (x == NULL)
		return 1;
	int c = find(s, *corrid);
	if (*start) {
		if (c < 0)
			c = take(s, now);
		if (c < 0) {
			snprintf(why, room, "sequence %llu: all %d streams of this instance are in use",
				 (unsigned long long)*corrid, EDGERNN_SLOTS);
			return 1;
		}
		s->corrid[c] = *corrid;
		reset_fn(&s->state[c]);
	} else if (c < 0) {
		snprintf(why, room,
			 "sequence %llu: unknown to this model instance (never started, ended, or freed after "
			 "%g s idle); start it with the START flag",
			 (unsigned long long)*corrid, EDGERNN_IDLE_US / 1e6);
		return 1;
	}
	s->seen_us[c] = now;
	int rc;
	if (MODEL_VOCAB_SIZE > 0) { /* the embedding table's rows, from the graph: no token reads past it */
		const int64_t token = *(const int64_t *)x;
		rc = token < 0 || token >= MODEL_VOCAB_SIZE ? MODEL_ERR_TOKEN
							    : step_token_fn(&s->state[c], (int32_t)token, y);
	} else {
		rc = step_fn(&s->state[c], (const float *)x, y);
	}
	if (*end)
		s->corrid[c] = 0; /* Triton has ended the sequence, even when its last step failed */
	if (rc == MODEL_ERR_TOKEN) {
		snprintf(why, room, "sequence %llu: x: expected a token id in [0, %d), got %lld",
			 (unsigned long long)*corrid, MODEL_VOCAB_SIZE, (long long)*(const int64_t *)x);
		return 1;
	}
	if (rc != MODEL_OK) {
		snprintf(why, room,
			 "sequence %llu: this input and state make the model produce NaN or inf (or x is not "
			 "finite); the state was left as it was",
			 (unsigned long long)*corrid);
		return 1;
	}
	*stepped = 1;
	return 0;
}

static void respond(TRITONBACKEND_Request *r, const float *y, int failed, const char *why)
{
	TRITONBACKEND_Response *response = NULL;
	TRITONSERVER_Error *err = TRITONBACKEND_ResponseNew(&response, r);
	if (err != NULL) {
		TRITONSERVER_ErrorDelete(err);
		return;
	}
	if (!failed) {
		const int64_t shape[2] = {1, MODEL_OUTPUT_SIZE};
		TRITONBACKEND_Output *out = NULL;
		void *buffer = NULL;
		TRITONSERVER_MemoryType memory = MEMORY_CPU;
		int64_t memory_id = 0;
		err = TRITONBACKEND_ResponseOutput(response, &out, "y", TYPE_FP32, shape, 2);
		if (err == NULL)
			err = TRITONBACKEND_OutputBuffer(out, &buffer, 4 * MODEL_OUTPUT_SIZE, &memory, &memory_id);
		if (err == NULL && memory != MEMORY_CPU)
			err = TRITONSERVER_ErrorNew(ERROR_INTERNAL, "edgernn backend: output y not in CPU memory");
		if (err == NULL)
			memcpy(buffer, y, 4 * MODEL_OUTPUT_SIZE);
		if (err != NULL) {
			TRITONSERVER_ErrorDelete(TRITONBACKEND_ResponseSend(response, RESPONSE_COMPLETE_FINAL, err));
			return;
		}
		err = TRITONBACKEND_ResponseSend(response, RESPONSE_COMPLETE_FINAL, NULL);
	} else {
		err = TRITONBACKEND_ResponseSend(response, RESPONSE_COMPLETE_FINAL,
						 TRITONSERVER_ErrorNew(ERROR_INVALID_ARG, why));
	}
	if (err != NULL)
		TRITONSERVER_ErrorDelete(err);
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance *instance,
							      TRITONBACKEND_Request **requests,
							      const uint32_t count)
{
	void *state = NULL;
	TRITONSERVER_Error *err = TRITONBACKEND_ModelInstanceState(instance, &state);
	if (err != NULL)
		return err; /* Triton then answers and releases every request itself */
	streams *s = state;
	const uint64_t exec_start = now_ns();
	const int64_t now = (int64_t)(exec_start / 1000);
	uint64_t stepped_count = 0;
	for (uint32_t i = 0; i < count; i++) {
		float y[MODEL_OUTPUT_SIZE];
		char why[320] = "";
		int stepped = 0;
		const uint64_t compute_start = now_ns();
		const int failed = serve(s, requests[i], now, y, &stepped, why, sizeof why);
		const uint64_t compute_end = now_ns();
		if (!failed && !stepped)
			memset(y, 0, sizeof y); /* READY 0: zeros, as the python flavour answers */
		respond(requests[i], y, failed, why);
		stepped_count += (uint64_t)stepped;
		/* Triton's statistics (the statistics API, the metrics, perf_analyzer), before the release */
		TRITONSERVER_Error *reported = TRITONBACKEND_ModelInstanceReportStatistics(
			instance, requests[i], !failed, exec_start, compute_start, compute_end, now_ns());
		if (reported != NULL)
			TRITONSERVER_ErrorDelete(reported);
		TRITONSERVER_Error *released = TRITONBACKEND_RequestRelease(requests[i], REQUEST_RELEASE_ALL);
		if (released != NULL)
			TRITONSERVER_ErrorDelete(released);
	}
	if (stepped_count > 0) {
		const uint64_t exec_end = now_ns();
		TRITONSERVER_Error *reported = TRITONBACKEND_ModelInstanceReportBatchStatistics(
			instance, stepped_count, exec_start, exec_start, exec_end, exec_end);
		if (reported != NULL)
			TRITONSERVER_ErrorDelete(reported);
	}
	return NULL;
}
