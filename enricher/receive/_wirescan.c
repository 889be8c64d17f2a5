/* One C pass over a serialized OTLP ExportTraceServiceRequest: validate it and read what
 * the pipeline needs of it, without building a message object per span.
 *
 * Why: upb's decode plus a Python walk over every span's ids cost more than the rest of
 * the enricher's per-request work (docs/PERFORMANCE.md). This file does in one pass what
 * enricher/receive/scan.py does in Python with upb; the two are held equal by tests
 * (tests/enricher/receive/test_scan.py).
 *
 * It accepts a strict subset of the valid encodings and declines (returns None) the rest:
 * known fields with an unexpected wire type, groups, a repeated singular field that the
 * pipeline reads (ids, names, resource, scope), nesting deeper than MAX_DEPTH, ids of the
 * wrong length, invalid UTF-8 in a string field, anything malformed. The caller then takes
 * the upb path, which decodes every valid request and words the error of an invalid one.
 * So this file never has to decide that a request is invalid, only that it is certainly
 * valid: every field is checked against the message schema that Python builds from the
 * installed protobuf descriptors (compile_schema), the same knowledge upb has.
 *
 * The walk runs without the GIL (for requests of 4 KiB and more): it only records offsets
 * into C arrays, and the Python objects are made afterwards. The receivers' threads scan
 * while the pipeline's thread works, on the other core.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 48
#define MAX_KEYS 62

enum kind { K_UNKNOWN = 0, K_VARINT, K_FIXED64, K_FIXED32, K_STRING, K_BYTES, K_MESSAGE, K_DECLINE };

typedef struct {
    int max_field;           /* fields above it are unknown */
    unsigned char *kinds;    /* by field number, 0..max_field */
    int *children;           /* by field number: message index for K_MESSAGE */
} message_schema;

typedef struct {
    int count;
    message_schema *messages;
    /* Indexes of the messages the walk reads itself. */
    int request, resource_spans, scope_spans, span, link, key_value, scope, resource;
} schema;

/* ---- wire primitives ------------------------------------------------------------------- */

static inline int read_varint(const unsigned char **p, const unsigned char *end, uint64_t *out) {
    const unsigned char *q = *p;
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (q >= end) return 0;
        unsigned char byte = *q++;
        if (shift == 63 && byte > 1) return 0; /* more than 64 bits */
        value |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *p = q;
            *out = value;
            return 1;
        }
    }
    return 0;
}

/* Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF), as upb checks. */
static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII runs, eight bytes at a time. */
        while (i + 8 <= n) {
            uint64_t chunk;
            memcpy(&chunk, s + i, 8);
            if (chunk & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n) return 0;
            unsigned char c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && c1 < 0xA0) return 0; /* overlong */
            if (c == 0xED && c1 > 0x9F) return 0; /* surrogate */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n) return 0;
            unsigned char c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && c1 < 0x90) return 0; /* overlong */
            if (c == 0xF4 && c1 > 0x8F) return 0; /* above U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* A tag or a length: upb reads them as varints of at most 5 bytes (32 bits) and refuses
 * longer encodings, though a varint value may take 10. Longer ones are declined here. */
static inline int read_varint32(const unsigned char **p, const unsigned char *end, uint64_t *out) {
    const unsigned char *q = *p;
    uint64_t value = 0;
    for (int i = 0; i < 5; i++) {
        if (q >= end) return 0;
        unsigned char byte = *q++;
        if (i == 4 && byte > 0x0F) return 0; /* more than 32 bits */
        value |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (byte < 0x80) {
            *p = q;
            *out = value;
            return 1;
        }
    }
    return 0;
}

/* One field: its number, wire type and value. For length-delimited fields the value is
 * [value, value_end); for others value_end is where the field ends. */
typedef struct {
    uint32_t number;
    int wire_type;
    const unsigned char *value;
    const unsigned char *value_end;
} field;

static int next_field(const unsigned char **p, const unsigned char *end, field *f) {
    uint64_t tag, length;
    if (!read_varint32(p, end, &tag)) return 0;
    if ((tag >> 3) == 0 || (tag >> 3) > 536870911) return 0;
    f->number = (uint32_t)(tag >> 3);
    f->wire_type = (int)(tag & 7);
    const unsigned char *q = *p;
    switch (f->wire_type) {
    case 0:
        f->value = q;
        if (!read_varint(&q, end, &length)) return 0;
        break;
    case 1:
        f->value = q;
        if (end - q < 8) return 0;
        q += 8;
        break;
    case 2:
        if (!read_varint32(&q, end, &length) || length > 0x7FFFFFFF) return 0;
        if ((uint64_t)(end - q) < length) return 0;
        f->value = q;
        q += length;
        break;
    case 5:
        f->value = q;
        if (end - q < 4) return 0;
        q += 4;
        break;
    default: /* groups (3, 4) are never used by OTLP; 6 and 7 are invalid */
        return 0;
    }
    f->value_end = q;
    *p = q;
    return 1;
}

static int kind_of(const schema *sc, int message, uint32_t number, int *child) {
    const message_schema *m = &sc->messages[message];
    if ((int64_t)number > m->max_field) return K_UNKNOWN;
    *child = m->children[number];
    return m->kinds[number];
}

/* Whether a field's wire type fits its kind; an unknown field fits any valid wire type. */
static inline int fits(int kind, int wire_type) {
    switch (kind) {
    case K_UNKNOWN: return 1;
    case K_VARINT: return wire_type == 0;
    case K_FIXED64: return wire_type == 1;
    case K_FIXED32: return wire_type == 5;
    case K_STRING: case K_BYTES: case K_MESSAGE: return wire_type == 2;
    default: return 0;
    }
}

static int validate_message(const schema *sc, int message, const unsigned char *p, const unsigned char *end, int depth);

/* Checks one field of ``message`` (recursing into sub-messages). */
static inline int validate_field(const schema *sc, int message, const field *f, int depth) {
    int child = -1;
    int kind = kind_of(sc, message, f->number, &child);
    if (!fits(kind, f->wire_type)) return 0;
    if (kind == K_STRING) return valid_utf8(f->value, (size_t)(f->value_end - f->value));
    if (kind == K_MESSAGE) return validate_message(sc, child, f->value, f->value_end, depth + 1);
    return 1;
}

static int validate_message(const schema *sc, int message, const unsigned char *p, const unsigned char *end, int depth) {
    if (depth > MAX_DEPTH) return 0;
    field f;
    while (p < end) {
        if (!next_field(&p, end, &f)) return 0;
        if (!validate_field(sc, message, &f, depth)) return 0;
    }
    return 1;
}

/* ---- the walk ------------------------------------------------------------------------------
 * It makes no Python objects, so that it can run without the GIL (on another core than the
 * pipeline): it records offsets into C arrays, and build() makes the few objects afterwards. */

typedef struct {
    Py_ssize_t off, len; /* len -1: absent */
} range;

typedef struct {
    Py_ssize_t trace, span, parent; /* offsets of the ids; parent -1 for a root span */
    Py_ssize_t field, start, end;   /* the span field's tag, its first byte and its end */
    uint64_t mask;                  /* the keys among its attribute keys */
    range link;                     /* its first link's trace id (len -1: no links) */
    range name;
    Py_ssize_t part_begin;          /* its fingerprint's attribute fields, in the parts array */
    int part_count, too_many_parts;
} span_rec;

typedef struct {
    Py_ssize_t field_start, body_start, body_end;
    range scope, name, url;
    Py_ssize_t first, count;
} scope_rec;

typedef struct {
    Py_ssize_t field_start, body_start, body_end;
    range resource, url;
    Py_ssize_t scope_begin, scope_end;
} resource_rec;

typedef struct {
    void *items;
    Py_ssize_t count, capacity;
    size_t size;
} vec;

/* Room for one more item (PyMem_Raw*: allowed without the GIL), or NULL when out of memory. */
static void *vec_push(vec *v) {
    if (v->count == v->capacity) {
        Py_ssize_t capacity = v->capacity ? v->capacity * 2 : 64;
        void *items = PyMem_RawRealloc(v->items, (size_t)capacity * v->size);
        if (items == NULL) return NULL;
        v->items = items;
        v->capacity = capacity;
    }
    return (char *)v->items + (size_t)(v->count++) * v->size;
}

#define MAX_FINGERPRINT_PARTS 32

typedef struct {
    const schema *sc;
    const unsigned char *base; /* the payload's first byte: positions are offsets from it */
    const unsigned char **keys;
    Py_ssize_t *key_lengths;
    int key_count;
    uint64_t keys_of_length[256]; /* by key length: the bits of the keys that long (0 above 255) */
    vec spans, scopes, resources, parts;
} walk;

enum { WALK_NO_MEMORY = -1, WALK_DECLINE = 0, WALK_OK = 1 };

/* The bit of the key in ``keys`` that a KeyValue's key (field 1; the last one counts, as
 * in upb) equals; 0 for none. */
static uint64_t key_hits(const walk *w, const unsigned char *p, const unsigned char *end) {
    const unsigned char *key = NULL;
    Py_ssize_t length = 0;
    field f;
    while (p < end) {
        if (!next_field(&p, end, &f)) return 0;
        if (f.number == 1 && f.wire_type == 2) {
            key = f.value;
            length = f.value_end - f.value;
        }
    }
    if (key == NULL) return 0;
    uint64_t candidates = length < 256 ? w->keys_of_length[length] : 0;
    if (length >= 256) {
        for (int k = 0; k < w->key_count; k++)
            if (w->key_lengths[k] == length) candidates |= (uint64_t)1 << k;
    }
    while (candidates) {
        int k = __builtin_ctzll(candidates);
        candidates &= candidates - 1;
        if (memcmp(w->keys[k], key, (size_t)length) == 0) return (uint64_t)1 << k;
    }
    return 0;
}

/* Whether a Link's ids have valid lengths (and are not repeated); its trace id into *trace. */
static int link_ids_ok(const unsigned char *p, const unsigned char *end, const unsigned char **trace, Py_ssize_t *trace_length) {
    field f;
    int seen_trace = 0, seen_span = 0;
    *trace = NULL;
    *trace_length = 0;
    while (p < end) {
        if (!next_field(&p, end, &f)) return 0;
        if (f.number == 1) {
            Py_ssize_t n = f.value_end - f.value;
            if (seen_trace++ || (n != 0 && n != 16)) return 0;
            *trace = f.value;
            *trace_length = n;
        } else if (f.number == 2) {
            Py_ssize_t n = f.value_end - f.value;
            if (seen_span++ || (n != 0 && n != 8)) return 0;
        }
    }
    return 1;
}

static int walk_span(walk *w, const unsigned char *field_start, const unsigned char *p, const unsigned char *end) {
    const schema *sc = w->sc;
    const unsigned char *base = w->base, *span_start = p;
    const unsigned char *trace = NULL, *span = NULL, *parent = NULL;
    Py_ssize_t parent_length = 0;
    uint64_t mask = 0;
    range link = {0, -1}, name = {0, -1};
    Py_ssize_t part_begin = w->parts.count;
    int part_count = 0, too_many_parts = 0;
    field f;
    while (p < end) {
        const unsigned char *at = p;
        if (!next_field(&p, end, &f)) return WALK_DECLINE;
        Py_ssize_t n = f.value_end - f.value;
        switch (f.number) {
        case 1:
            if (f.wire_type != 2 || trace != NULL || n != 16) return WALK_DECLINE;
            trace = f.value;
            continue;
        case 2:
            if (f.wire_type != 2 || span != NULL || n != 8) return WALK_DECLINE;
            span = f.value;
            continue;
        case 4:
            if (f.wire_type != 2 || parent != NULL || (n != 0 && n != 8)) return WALK_DECLINE;
            parent = f.value;
            parent_length = n;
            continue;
        case 5:
            if (!validate_field(sc, sc->span, &f, 4)) return WALK_DECLINE;
            name.off = f.value - base; /* the last one counts, as in upb */
            name.len = n;
            continue;
        case 9:
            if (!validate_field(sc, sc->span, &f, 4)) return WALK_DECLINE;
            if (w->key_count) {
                uint64_t bit = key_hits(w, f.value, f.value_end);
                if (bit) {
                    mask |= bit;
                    if (part_count < MAX_FINGERPRINT_PARTS) {
                        range *part = vec_push(&w->parts);
                        if (part == NULL) return WALK_NO_MEMORY;
                        part->off = at - base;
                        part->len = f.value_end - at;
                        part_count++;
                    } else {
                        too_many_parts = 1;
                    }
                }
            }
            continue;
        case 13: {
            if (!validate_field(sc, sc->span, &f, 4)) return WALK_DECLINE;
            const unsigned char *t;
            Py_ssize_t tn;
            if (!link_ids_ok(f.value, f.value_end, &t, &tn)) return WALK_DECLINE;
            if (link.len < 0) {
                link.off = t ? t - base : 0;
                link.len = tn;
            }
            continue;
        }
        default:
            if (!validate_field(sc, sc->span, &f, 4)) return WALK_DECLINE;
        }
    }
    if (trace == NULL || span == NULL) return WALK_DECLINE; /* absent ids are empty: invalid */
    span_rec *rec = vec_push(&w->spans);
    if (rec == NULL) return WALK_NO_MEMORY;
    rec->trace = trace - base;
    rec->span = span - base;
    rec->parent = parent_length ? parent - base : -1;
    rec->field = field_start - base;
    rec->start = span_start - base;
    rec->end = end - base;
    rec->mask = mask;
    rec->link = link;
    rec->name = name;
    rec->part_begin = part_begin;
    rec->part_count = part_count;
    rec->too_many_parts = too_many_parts;
    return WALK_OK;
}

static int walk_scope(walk *w, const unsigned char *field_start, const unsigned char *p, const unsigned char *end) {
    const schema *sc = w->sc;
    const unsigned char *base = w->base, *body = p;
    range scope = {0, -1}, name = {0, -1}, url = {0, -1};
    Py_ssize_t first = w->spans.count;
    field f;
    while (p < end) {
        const unsigned char *at = p;
        if (!next_field(&p, end, &f)) return WALK_DECLINE;
        if (f.number == 2) {
            if (f.wire_type != 2) return WALK_DECLINE;
            int result = walk_span(w, at, f.value, f.value_end);
            if (result != WALK_OK) return result;
            continue;
        }
        if (!validate_field(sc, sc->scope_spans, &f, 3)) return WALK_DECLINE;
        if (f.number == 1) {
            if (scope.len >= 0) return WALK_DECLINE;
            scope.off = f.value - base;
            scope.len = f.value_end - f.value;
            /* InstrumentationScope.name is field 1. */
            const unsigned char *q = f.value;
            field g;
            while (q < f.value_end) {
                if (!next_field(&q, f.value_end, &g)) return WALK_DECLINE;
                if (g.number == 1) {
                    if (name.len >= 0) return WALK_DECLINE;
                    name.off = g.value - base;
                    name.len = g.value_end - g.value;
                }
            }
        } else if (f.number == 3) {
            if (url.len >= 0) return WALK_DECLINE;
            url.off = f.value - base;
            url.len = f.value_end - f.value;
        }
    }
    scope_rec *rec = vec_push(&w->scopes);
    if (rec == NULL) return WALK_NO_MEMORY;
    rec->field_start = field_start - base;
    rec->body_start = body - base;
    rec->body_end = end - base;
    rec->scope = scope;
    rec->name = name;
    rec->url = url;
    rec->first = first;
    rec->count = w->spans.count - first;
    return WALK_OK;
}

static int walk_resource(walk *w, const unsigned char *field_start, const unsigned char *p, const unsigned char *end) {
    const schema *sc = w->sc;
    const unsigned char *base = w->base, *body = p;
    range resource = {0, -1}, url = {0, -1};
    Py_ssize_t scope_begin = w->scopes.count;
    field f;
    while (p < end) {
        const unsigned char *at = p;
        if (!next_field(&p, end, &f)) return WALK_DECLINE;
        if (f.number == 2) {
            if (f.wire_type != 2) return WALK_DECLINE;
            int result = walk_scope(w, at, f.value, f.value_end);
            if (result != WALK_OK) return result;
            continue;
        }
        if (!validate_field(sc, sc->resource_spans, &f, 2)) return WALK_DECLINE;
        if (f.number == 1) {
            if (resource.len >= 0) return WALK_DECLINE;
            resource.off = f.value - base;
            resource.len = f.value_end - f.value;
        } else if (f.number == 3) {
            if (url.len >= 0) return WALK_DECLINE;
            url.off = f.value - base;
            url.len = f.value_end - f.value;
        }
    }
    resource_rec *rec = vec_push(&w->resources);
    if (rec == NULL) return WALK_NO_MEMORY;
    rec->field_start = field_start - base;
    rec->body_start = body - base;
    rec->body_end = end - base;
    rec->resource = resource;
    rec->url = url;
    rec->scope_begin = scope_begin;
    rec->scope_end = w->scopes.count;
    return WALK_OK;
}

static int walk_request(walk *w, Py_ssize_t length) {
    const unsigned char *p = w->base, *end = p + length;
    field f;
    while (p < end) {
        const unsigned char *at = p;
        if (!next_field(&p, end, &f)) return WALK_DECLINE;
        if (f.number == 1) {
            if (f.wire_type != 2) return WALK_DECLINE;
            int result = walk_resource(w, at, f.value, f.value_end);
            if (result != WALK_OK) return result;
        } else if (!validate_field(w->sc, w->sc->request, &f, 1)) {
            return WALK_DECLINE;
        }
    }
    return WALK_OK;
}

/* ---- the Python objects of a walk (with the GIL) ---------------------------------------------- */

static PyObject *text_or_empty(const unsigned char *base, range r) {
    if (r.len < 0) return PyUnicode_FromStringAndSize("", 0);
    return PyUnicode_DecodeUTF8((const char *)base + r.off, r.len, "strict");
}

static PyObject *bytes_or_empty(const unsigned char *base, range r) {
    return PyBytes_FromStringAndSize(r.len < 0 ? "" : (const char *)base + r.off, r.len < 0 ? 0 : r.len);
}

/* A span's fingerprint: its name, then the attribute fields (as sent) whose keys are scanned
 * for, in order. Spans with equal fingerprints in one scope are the same to the rules. */
static PyObject *fingerprint(const walk *w, const span_rec *rec) {
    const unsigned char *base = w->base;
    const range *parts = (const range *)w->parts.items + rec->part_begin;
    Py_ssize_t name_length = rec->name.len < 0 ? 0 : rec->name.len, size = 5 + name_length;
    for (int i = 0; i < rec->part_count; i++) size += parts[i].len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    unsigned char *q = (unsigned char *)PyBytes_AS_STRING(out);
    /* The name's length as four fixed bytes and a separator: no name can run into a part. */
    q[0] = (unsigned char)(name_length >> 24);
    q[1] = (unsigned char)(name_length >> 16);
    q[2] = (unsigned char)(name_length >> 8);
    q[3] = (unsigned char)name_length;
    q[4] = 0;
    q += 5;
    if (name_length) memcpy(q, base + rec->name.off, (size_t)name_length);
    q += name_length;
    for (int i = 0; i < rec->part_count; i++) {
        memcpy(q, base + parts[i].off, (size_t)parts[i].len);
        q += parts[i].len;
    }
    return out;
}

static int set_item(PyObject *dict, Py_ssize_t index, PyObject *value) {
    PyObject *key = PyLong_FromSsize_t(index);
    int result = key == NULL || value == NULL ? -1 : PyDict_SetItem(dict, key, value);
    Py_XDECREF(key);
    Py_XDECREF(value);
    return result;
}

static int append_new(PyObject *list, PyObject *item) {
    if (item == NULL) return -1;
    int result = PyList_Append(list, item);
    Py_DECREF(item);
    return result;
}

/* (resources, ids, positions, hits, links, fingerprints or None). ``positions`` is bytes: each
 * span's field start, then each span's first byte, then each span's end, as native int64 (one
 * object where lists would take three ints a span to make, and rewrite to read back). */
static PyObject *build(const walk *w, int want_fingerprints) {
    const unsigned char *base = w->base;
    Py_ssize_t count = w->spans.count;
    PyObject *result = NULL, *empty = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *resources = PyList_New(0), *ids = PyList_New(count);
    PyObject *positions = PyBytes_FromStringAndSize(NULL, 3 * count * (Py_ssize_t)sizeof(long long));
    PyObject *hits = PyDict_New(), *links = PyDict_New(), *fingerprints = want_fingerprints ? PyDict_New() : Py_None;
    PyObject *trace = NULL; /* the last span's trace id: spans of a trace usually come together */
    if (fingerprints == Py_None) Py_INCREF(Py_None);
    if (!empty || !resources || !ids || !positions || !hits || !links || !fingerprints) goto done;
    long long *fields = (long long *)PyBytes_AS_STRING(positions), *starts = fields + count, *ends = starts + count;
    const span_rec *spans = w->spans.items;
    for (Py_ssize_t i = 0; i < count; i++) {
        const span_rec *rec = &spans[i];
        if (trace == NULL || memcmp(PyBytes_AS_STRING(trace), base + rec->trace, 16) != 0) {
            Py_XDECREF(trace);
            trace = PyBytes_FromStringAndSize((const char *)base + rec->trace, 16);
            if (trace == NULL) goto done;
        }
        PyObject *span = PyBytes_FromStringAndSize((const char *)base + rec->span, 8);
        PyObject *parent = rec->parent < 0 ? (Py_INCREF(empty), empty) : PyBytes_FromStringAndSize((const char *)base + rec->parent, 8);
        PyObject *triple = span && parent ? PyTuple_Pack(3, trace, span, parent) : NULL;
        Py_XDECREF(span);
        Py_XDECREF(parent);
        if (triple == NULL) goto done;
        PyList_SET_ITEM(ids, i, triple);
        fields[i] = rec->field;
        starts[i] = rec->start;
        ends[i] = rec->end;
        if (rec->mask) {
            if (set_item(hits, i, PyLong_FromUnsignedLongLong(rec->mask)) < 0) goto done;
            if (want_fingerprints && !rec->too_many_parts && set_item(fingerprints, i, fingerprint(w, rec)) < 0) goto done;
        }
        if (rec->link.len >= 0 && set_item(links, i, bytes_or_empty(base, rec->link)) < 0) goto done;
    }
    const resource_rec *resource_recs = w->resources.items;
    const scope_rec *scope_recs = w->scopes.items;
    for (Py_ssize_t r = 0; r < w->resources.count; r++) {
        const resource_rec *res = &resource_recs[r];
        PyObject *scopes = PyList_New(0);
        if (scopes == NULL) goto done;
        for (Py_ssize_t s = res->scope_begin; s < res->scope_end; s++) {
            const scope_rec *sc = &scope_recs[s];
            if (append_new(scopes, Py_BuildValue("(nnnNNNnn)", sc->field_start, sc->body_start, sc->body_end,
                                                 bytes_or_empty(base, sc->scope), text_or_empty(base, sc->name),
                                                 text_or_empty(base, sc->url), sc->first, sc->count)) < 0) {
                Py_DECREF(scopes);
                goto done;
            }
        }
        if (append_new(resources, Py_BuildValue("(nnnNNN)", res->field_start, res->body_start, res->body_end,
                                                bytes_or_empty(base, res->resource), text_or_empty(base, res->url),
                                                scopes)) < 0)
            goto done;
    }
    result = PyTuple_Pack(6, resources, ids, positions, hits, links, fingerprints);
done:
    Py_XDECREF(trace);
    Py_XDECREF(empty);
    Py_XDECREF(resources);
    Py_XDECREF(ids);
    Py_XDECREF(positions);
    Py_XDECREF(hits);
    Py_XDECREF(links);
    Py_XDECREF(fingerprints);
    return result;
}

/* ---- rewriting ------------------------------------------------------------------------- */

static inline Py_ssize_t varint_size(Py_ssize_t value) {
    Py_ssize_t size = 1;
    while (value > 0x7F) {
        value >>= 7;
        size++;
    }
    return size;
}

static inline unsigned char *put_header(unsigned char *out, unsigned char tag, Py_ssize_t length) {
    *out++ = tag;
    while (length > 0x7F) {
        *out++ = (unsigned char)((length & 0x7F) | 0x80);
        length >>= 7;
    }
    *out++ = (unsigned char)length;
    return out;
}

typedef struct {
    Py_ssize_t field_start, body_start, body_end, first, count;
} scope_pos;

typedef struct {
    Py_ssize_t field_start, body_start, body_end;
    Py_ssize_t scope_begin, scope_end; /* its scopes in the scope array */
    Py_ssize_t new_body;               /* its body's size after the edits (-1: not edited) */
} resource_pos;

/* ``count`` ints from a tuple that holds them and then ``extra`` more items. Only exact ints:
 * no Python code (__index__) may run while positions are being read. */
static int read_ints(PyObject *tuple, Py_ssize_t count, Py_ssize_t extra, Py_ssize_t *out) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != count + extra) {
        PyErr_SetString(PyExc_TypeError, "a layout entry is a tuple of the wrong size");
        return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (!PyLong_CheckExact(item)) {
            PyErr_SetString(PyExc_TypeError, "layout positions are ints");
            return 0;
        }
        out[i] = PyLong_AsSsize_t(item);
        if (out[i] == -1 && PyErr_Occurred()) return 0;
    }
    return 1;
}

/* The new body length of a scope with edits [*k, ...) (those below first + count), or -1. */
static Py_ssize_t scope_body_size(const scope_pos *sc, PyObject *order, Py_ssize_t k, Py_ssize_t k_end, PyObject *edits,
                                  const Py_ssize_t *fields, const Py_ssize_t *starts, const Py_ssize_t *ends) {
    Py_ssize_t size = sc->body_end - sc->body_start;
    for (Py_ssize_t j = k; j < k_end; j++) {
        Py_ssize_t index = PyLong_AsSsize_t(PyList_GET_ITEM(order, j));
        PyObject *extra = PyDict_GetItemWithError(edits, PyList_GET_ITEM(order, j));
        if (extra == NULL) return -1;
        size -= ends[index] - fields[index];
        if (extra != Py_None) {
            Py_ssize_t span = ends[index] - starts[index] + PyBytes_GET_SIZE(extra);
            size += 1 + varint_size(span) + span;
        }
    }
    return size;
}

static unsigned char *write_scope(unsigned char *out, const unsigned char *payload, const scope_pos *sc, PyObject *order,
                                  Py_ssize_t k, Py_ssize_t k_end, PyObject *edits, const Py_ssize_t *fields,
                                  const Py_ssize_t *starts, const Py_ssize_t *ends) {
    Py_ssize_t copied = sc->body_start;
    for (Py_ssize_t j = k; j < k_end; j++) {
        Py_ssize_t index = PyLong_AsSsize_t(PyList_GET_ITEM(order, j));
        PyObject *extra = PyDict_GetItem(edits, PyList_GET_ITEM(order, j));
        if (copied < fields[index]) {
            memcpy(out, payload + copied, (size_t)(fields[index] - copied));
            out += fields[index] - copied;
        }
        copied = ends[index];
        if (extra != Py_None) {
            Py_ssize_t body = ends[index] - starts[index], extra_size = PyBytes_GET_SIZE(extra);
            out = put_header(out, 0x12, body + extra_size);
            memcpy(out, payload + starts[index], (size_t)body);
            out += body;
            memcpy(out, PyBytes_AS_STRING(extra), (size_t)extra_size);
            out += extra_size;
        }
    }
    memcpy(out, payload + copied, (size_t)(sc->body_end - copied));
    return out + (sc->body_end - copied);
}

/* rewrite(payload, layout, positions, edits) -> bytes. positions: as scan gives them (each span's
 * field start, first byte and end, three native int64 blocks). layout: a list of
 * (field_start, body_start, body_end, [(field_start, body_start, body_end, first, count)])
 * per ResourceSpans; edits: span index -> bytes to append, or None to remove. The C twin of
 * enricher.wire.rewrite (tests hold the two equal). */
static PyObject *rewrite(PyObject *self, PyObject *args) {
    Py_buffer payload, packed;
    PyObject *layout, *edits;
    if (!PyArg_ParseTuple(args, "y*O!y*O!", &payload, &PyList_Type, &layout, &packed, &PyDict_Type, &edits))
        return NULL;
    PyObject *result = NULL, *order = NULL;
    Py_ssize_t span_count = packed.len / (Py_ssize_t)(3 * sizeof(long long));
    Py_ssize_t *positions = NULL;
    resource_pos *resources = NULL;
    scope_pos *scopes = NULL;
    Py_ssize_t resource_count = PyList_GET_SIZE(layout), scope_count = 0;
    if (packed.len % (Py_ssize_t)(3 * sizeof(long long)) != 0) {
        PyErr_SetString(PyExc_ValueError, "positions are three int64 a span");
        goto done;
    }
    positions = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(3 * span_count + 1));
    resources = PyMem_Malloc(sizeof(resource_pos) * (size_t)(resource_count + 1));
    if (positions == NULL || resources == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t *fields = positions, *starts = positions + span_count, *ends = positions + 2 * span_count;
    for (Py_ssize_t i = 0; i < 3 * span_count; i++) {
        long long value;
        memcpy(&value, (const char *)packed.buf + i * (Py_ssize_t)sizeof(value), sizeof(value));
        positions[i] = (Py_ssize_t)value;
    }
    for (Py_ssize_t i = 0; i < span_count; i++) {
        if (fields[i] < 0 || fields[i] > starts[i] || starts[i] > ends[i] || ends[i] > payload.len) {
            PyErr_SetString(PyExc_ValueError, "span positions out of range");
            goto done;
        }
    }
    /* No Python code runs from here on (exact ints and lists only), so the layout keeps its sizes. */
    Py_ssize_t previous_end = 0;
    for (Py_ssize_t r = 0; r < resource_count; r++) {
        PyObject *item = PyList_GET_ITEM(layout, r);
        Py_ssize_t values[3];
        if (!read_ints(item, 3, 1, values)) goto done;
        if (!PyList_Check(PyTuple_GET_ITEM(item, 3))) {
            PyErr_SetString(PyExc_TypeError, "a resource's scopes are a list");
            goto done;
        }
        resources[r].field_start = values[0];
        resources[r].body_start = values[1];
        resources[r].body_end = values[2];
        if (values[0] < previous_end || values[0] > values[1] || values[1] > values[2] || values[2] > payload.len) {
            PyErr_SetString(PyExc_ValueError, "resource positions out of range or out of order");
            goto done;
        }
        previous_end = values[2];
        scope_count += PyList_GET_SIZE(PyTuple_GET_ITEM(item, 3));
    }
    scopes = PyMem_Malloc(sizeof(scope_pos) * (size_t)(scope_count + 1));
    if (scopes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t r = 0; r < resource_count; r++) {
        PyObject *scope_list = PyTuple_GET_ITEM(PyList_GET_ITEM(layout, r), 3);
        resources[r].scope_begin = at;
        Py_ssize_t inner = resources[r].body_start;
        for (Py_ssize_t s = 0; s < PyList_GET_SIZE(scope_list); s++, at++) {
            scope_pos *sc = &scopes[at];
            Py_ssize_t values[5];
            if (!read_ints(PyList_GET_ITEM(scope_list, s), 5, 0, values)) goto done;
            sc->field_start = values[0];
            sc->body_start = values[1];
            sc->body_end = values[2];
            sc->first = values[3];
            sc->count = values[4];
            if (sc->field_start < inner || sc->field_start > sc->body_start || sc->body_start > sc->body_end ||
                sc->body_end > resources[r].body_end || sc->first < 0 || sc->count < 0 ||
                sc->count > span_count - sc->first) {
                PyErr_SetString(PyExc_ValueError, "scope positions out of range or out of order");
                goto done;
            }
            inner = sc->body_end;
        }
        resources[r].scope_end = at;
    }
    order = PyDict_Keys(edits);
    if (order == NULL) goto done;
    Py_ssize_t edit_count = PyList_GET_SIZE(order);
    for (Py_ssize_t j = 0; j < edit_count; j++) {
        if (!PyLong_CheckExact(PyList_GET_ITEM(order, j))) { /* sorting other keys could run Python code */
            PyErr_SetString(PyExc_TypeError, "edits are keyed by span index (int)");
            goto done;
        }
    }
    if (PyList_Sort(order) < 0) goto done;
    for (Py_ssize_t j = 0; j < edit_count; j++) {
        PyObject *key = PyList_GET_ITEM(order, j), *extra = PyDict_GetItem(edits, key);
        Py_ssize_t index = PyLong_AsSsize_t(key);
        if (index == -1 && PyErr_Occurred()) goto done;
        if (index < 0 || index >= span_count || (extra != Py_None && !PyBytes_Check(extra))) {
            PyErr_SetString(PyExc_ValueError, "an edit names no span, or is neither bytes nor None");
            goto done;
        }
    }

    /* Pass 1: the new sizes. Pass 2: the bytes. Both walk the resources, their scopes and
     * the edits in index order (scopes number their spans in order). */
    const unsigned char *data = payload.buf;
    Py_ssize_t total = payload.len, k = 0;
    for (Py_ssize_t r = 0; r < resource_count; r++) {
        resource_pos *res = &resources[r];
        Py_ssize_t body = res->body_end - res->body_start, first_k = k;
        res->new_body = -1;
        for (Py_ssize_t s = res->scope_begin; s < res->scope_end && k < edit_count; s++) {
            scope_pos *sc = &scopes[s];
            Py_ssize_t k_end = k, copied = sc->body_start;
            while (k_end < edit_count && PyLong_AsSsize_t(PyList_GET_ITEM(order, k_end)) < sc->first + sc->count) {
                Py_ssize_t index = PyLong_AsSsize_t(PyList_GET_ITEM(order, k_end));
                if (index < sc->first || fields[index] < copied || ends[index] > sc->body_end) {
                    PyErr_SetString(PyExc_ValueError, "an edited span lies outside its scope, or out of order");
                    goto done;
                }
                copied = ends[index];
                k_end++;
            }
            if (k_end == k) continue;
            Py_ssize_t new_body = scope_body_size(sc, order, k, k_end, edits, fields, starts, ends);
            if (new_body < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a scope's new size is negative");
                goto done;
            }
            body += 1 + varint_size(new_body) + new_body - (sc->body_end - sc->field_start);
            k = k_end;
        }
        if (k == first_k) continue;
        res->new_body = body;
        total += 1 + varint_size(body) + body - (res->body_end - res->field_start);
    }
    if (k != edit_count) {
        PyErr_SetString(PyExc_ValueError, "an edited span is in no scope");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t copied = 0;
    k = 0;
    for (Py_ssize_t r = 0; r < resource_count; r++) {
        resource_pos *res = &resources[r];
        if (res->new_body < 0) continue;
        memcpy(out, data + copied, (size_t)(res->field_start - copied));
        out += res->field_start - copied;
        out = put_header(out, 0x0A, res->new_body);
        Py_ssize_t inner = res->body_start;
        for (Py_ssize_t s = res->scope_begin; s < res->scope_end && k < edit_count; s++) {
            scope_pos *sc = &scopes[s];
            Py_ssize_t k_end = k;
            while (k_end < edit_count && PyLong_AsSsize_t(PyList_GET_ITEM(order, k_end)) < sc->first + sc->count) k_end++;
            if (k_end == k) continue;
            Py_ssize_t new_body = scope_body_size(sc, order, k, k_end, edits, fields, starts, ends);
            memcpy(out, data + inner, (size_t)(sc->field_start - inner));
            out += sc->field_start - inner;
            out = put_header(out, 0x12, new_body);
            out = write_scope(out, data, sc, order, k, k_end, edits, fields, starts, ends);
            inner = sc->body_end;
            k = k_end;
        }
        memcpy(out, data + inner, (size_t)(res->body_end - inner));
        out += res->body_end - inner;
        copied = res->body_end;
    }
    memcpy(out, data + copied, (size_t)(payload.len - copied));
    out += payload.len - copied;
    if (out - (unsigned char *)PyBytes_AS_STRING(result) != total) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_SystemError, "rewrite size mismatch");
    }
done:
    Py_XDECREF(order);
    PyMem_Free(positions);
    PyMem_Free(resources);
    PyMem_Free(scopes);
    PyBuffer_Release(&packed);
    PyBuffer_Release(&payload);
    return result;
}

/* ---- the module ------------------------------------------------------------------------- */

static void free_schema(PyObject *capsule) {
    schema *sc = PyCapsule_GetPointer(capsule, "agentmon.wirescan.schema");
    if (sc == NULL) return;
    for (int i = 0; i < sc->count; i++) {
        PyMem_Free(sc->messages[i].kinds);
        PyMem_Free(sc->messages[i].children);
    }
    PyMem_Free(sc->messages);
    PyMem_Free(sc);
}

/* compile_schema(messages, roles) -> capsule.
 * messages: a list, per message, of (field number, kind, child message index) tuples.
 * roles: (request, resource_spans, scope_spans, span, link, key_value, scope, resource) indexes. */
static PyObject *compile_schema(PyObject *self, PyObject *args) {
    PyObject *messages;
    schema *sc;
    int roles[8];
    if (!PyArg_ParseTuple(args, "O!(iiiiiiii)", &PyList_Type, &messages, &roles[0], &roles[1], &roles[2], &roles[3],
                          &roles[4], &roles[5], &roles[6], &roles[7]))
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(messages);
    for (int r = 0; r < 8; r++) {
        if (roles[r] < 0 || roles[r] >= count) {
            PyErr_SetString(PyExc_ValueError, "a role names no message");
            return NULL;
        }
    }
    sc = PyMem_Calloc(1, sizeof(schema));
    if (sc == NULL) return PyErr_NoMemory();
    sc->messages = PyMem_Calloc((size_t)count, sizeof(message_schema));
    if (sc->messages == NULL) {
        PyMem_Free(sc);
        return PyErr_NoMemory();
    }
    sc->count = (int)count;
    PyObject *capsule = PyCapsule_New(sc, "agentmon.wirescan.schema", free_schema);
    if (capsule == NULL) {
        PyMem_Free(sc->messages);
        PyMem_Free(sc);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *fields = PyList_GET_ITEM(messages, i);
        if (!PyList_Check(fields)) {
            PyErr_SetString(PyExc_TypeError, "each message is a list of fields");
            goto error;
        }
        /* Each field is read once, into C arrays, and only those are used after. */
        Py_ssize_t field_count = PyList_GET_SIZE(fields);
        int *numbers = PyMem_Calloc((size_t)field_count + 1, sizeof(int) * 3);
        if (numbers == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        int max_field = 0;
        for (Py_ssize_t j = 0; j < field_count; j++) {
            PyObject *entry = PyList_GET_ITEM(fields, j);
            int *f = numbers + 3 * j;
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3 || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 0)) ||
                !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 1)) || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 2))) {
                PyMem_Free(numbers);
                PyErr_SetString(PyExc_TypeError, "a field is (number, kind, child) ints");
                goto error;
            }
            for (int x = 0; x < 3; x++) {
                long value = PyLong_AsLong(PyTuple_GET_ITEM(entry, x));
                if ((value == -1 && PyErr_Occurred()) || value < INT_MIN || value > INT_MAX) {
                    PyMem_Free(numbers);
                    if (!PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "field value out of range");
                    goto error;
                }
                f[x] = (int)value;
            }
            if (f[0] <= 0 || f[0] > 4096) {
                PyMem_Free(numbers);
                PyErr_SetString(PyExc_ValueError, "field numbers above 4096 are not supported");
                goto error;
            }
            if (f[1] < K_UNKNOWN || f[1] > K_DECLINE || (f[1] == K_MESSAGE && (f[2] < 0 || f[2] >= count))) {
                PyMem_Free(numbers);
                PyErr_SetString(PyExc_ValueError, "bad field kind or child message");
                goto error;
            }
            if (f[0] > max_field) max_field = f[0];
        }
        message_schema *m = &sc->messages[i];
        m->max_field = max_field;
        m->kinds = PyMem_Calloc((size_t)max_field + 1, 1);
        m->children = PyMem_Calloc((size_t)max_field + 1, sizeof(int));
        if (m->kinds == NULL || m->children == NULL) {
            PyMem_Free(numbers);
            PyErr_NoMemory();
            goto error;
        }
        for (Py_ssize_t j = 0; j < field_count; j++) {
            int *f = numbers + 3 * j;
            m->kinds[f[0]] = (unsigned char)f[1];
            m->children[f[0]] = f[2];
        }
        PyMem_Free(numbers);
    }
    sc->request = roles[0];
    sc->resource_spans = roles[1];
    sc->scope_spans = roles[2];
    sc->span = roles[3];
    sc->link = roles[4];
    sc->key_value = roles[5];
    sc->scope = roles[6];
    sc->resource = roles[7];
    return capsule;
error:
    Py_DECREF(capsule);
    return NULL;
}

/* scan(payload, schema, keys[, fingerprints]) -> (resources, ids, fields, starts, ends, hits,
 * links, fingerprints or None), or None to decline. fingerprints: span -> its fingerprint, for
 * the spans with hits (and at most MAX_FINGERPRINT_PARTS of them). */
static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer payload;
    PyObject *capsule, *keys;
    int want_fingerprints = 0;
    if (!PyArg_ParseTuple(args, "y*OO!|p", &payload, &capsule, &PyTuple_Type, &keys, &want_fingerprints)) return NULL;
    PyObject *result = NULL;
    const schema *sc = PyCapsule_GetPointer(capsule, "agentmon.wirescan.schema");
    walk w;
    memset(&w, 0, sizeof(w));
    w.spans.size = sizeof(span_rec);
    w.scopes.size = sizeof(scope_rec);
    w.resources.size = sizeof(resource_rec);
    w.parts.size = sizeof(range);
    const unsigned char *key_bytes[MAX_KEYS];
    Py_ssize_t key_lengths[MAX_KEYS];
    if (sc == NULL) goto done;
    Py_ssize_t key_count = PyTuple_GET_SIZE(keys);
    if (key_count > MAX_KEYS) {
        PyErr_SetString(PyExc_ValueError, "at most 62 keys");
        goto done;
    }
    for (Py_ssize_t k = 0; k < key_count; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys, k);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "keys are bytes");
            goto done;
        }
        key_bytes[k] = (const unsigned char *)PyBytes_AS_STRING(key);
        key_lengths[k] = PyBytes_GET_SIZE(key);
        if (key_lengths[k] < 256) w.keys_of_length[key_lengths[k]] |= (uint64_t)1 << k;
    }
    w.sc = sc;
    w.base = payload.buf;
    w.keys = key_bytes;
    w.key_lengths = key_lengths;
    w.key_count = (int)key_count;
    /* The walk touches no Python object: other threads (the pipeline) run meanwhile. The
     * payload and the keys are bytes (immutable) held by this call's arguments. */
    int walked;
    if (payload.len >= 4096) {
        Py_BEGIN_ALLOW_THREADS
        walked = walk_request(&w, payload.len);
        Py_END_ALLOW_THREADS
    } else {
        walked = walk_request(&w, payload.len);
    }
    if (walked == WALK_NO_MEMORY) {
        PyErr_NoMemory();
    } else if (walked == WALK_DECLINE) {
        result = Py_None;
        Py_INCREF(result);
    } else {
        result = build(&w, want_fingerprints);
    }
done:
    PyMem_RawFree(w.spans.items);
    PyMem_RawFree(w.scopes.items);
    PyMem_RawFree(w.resources.items);
    PyMem_RawFree(w.parts.items);
    PyBuffer_Release(&payload);
    return result;
}

static PyMethodDef methods[] = {
    {"compile_schema", compile_schema, METH_VARARGS, "compile_schema(messages, roles) -> schema capsule"},
    {"rewrite", rewrite, METH_VARARGS,
     "rewrite(payload, layout, positions, edits) -> the payload with spans removed or appended to"},
    {"scan", scan, METH_VARARGS,
     "scan(payload, schema, keys[, fingerprints]) -> (resources, ids, fields, starts, ends, hits, links, fingerprints), or None to decline"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_wirescan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__wirescan(void) { return PyModule_Create(&module); }
