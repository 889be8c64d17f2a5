/* The attributor's per-span loops (enricher/attribute.py), in C.
 *
 * Why: attribution walked every span of every request twice in Python (record each span's
 * parent, then walk each span's ancestry to its nearest agent); py-spy put that at a quarter
 * of the enricher's GIL time. These functions do the same on the same Python dicts, one run
 * of spans of one trace at a time. enricher/attribute.py keeps the Python versions (used
 * when this extension is not built) and tests/enricher/test_attribute_batch.py holds both to
 * the reference model.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The ids are exact bytes (as the request scanner makes them): comparing and hashing them then
 * runs no Python code, so borrowed references stay valid through the loops. */
static int id_triple(PyObject *triple) {
    if (!PyTuple_CheckExact(triple) || PyTuple_GET_SIZE(triple) != 3 || !PyBytes_CheckExact(PyTuple_GET_ITEM(triple, 0)) ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(triple, 1)) || !PyBytes_CheckExact(PyTuple_GET_ITEM(triple, 2))) {
        PyErr_SetString(PyExc_TypeError, "ids are (trace_id, span_id, parent_span_id) tuples of bytes");
        return 0;
    }
    return 1;
}

/* trace_runs(ids) -> [start, end, start, end, ...]: the runs of consecutive spans of one
 * trace in ``ids`` (a list of (trace_id, span_id, parent_span_id) tuples). */
static PyObject *trace_runs(PyObject *self, PyObject *args) {
    PyObject *ids;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &ids)) return NULL;
    PyObject *runs = PyList_New(0);
    if (runs == NULL) return NULL;
    Py_ssize_t count = PyList_GET_SIZE(ids), start = 0;
    PyObject *last = NULL;
    for (Py_ssize_t i = 0; i <= count; i++) {
        PyObject *trace = NULL;
        if (i < count) {
            PyObject *triple = PyList_GET_ITEM(ids, i);
            if (!id_triple(triple)) goto error;
            trace = PyTuple_GET_ITEM(triple, 0);
            if (last != NULL) {
                int same = trace == last ? 1 : PyObject_RichCompareBool(trace, last, Py_EQ);
                if (same < 0) goto error;
                if (same) continue;
            }
        }
        if (last != NULL) {
            PyObject *a = PyLong_FromSsize_t(start), *b = PyLong_FromSsize_t(i);
            int failed = a == NULL || b == NULL || PyList_Append(runs, a) < 0 || PyList_Append(runs, b) < 0;
            Py_XDECREF(a);
            Py_XDECREF(b);
            if (failed) goto error;
        }
        last = trace;
        start = i;
    }
    return runs;
error:
    Py_DECREF(runs);
    return NULL;
}

/* record_parents(ids, start, end, parents, cap) -> whether a root span was among them.
 * parents[span_id] = parent_span_id for each span while len(parents) < cap. */
static PyObject *record_parents(PyObject *self, PyObject *args) {
    PyObject *ids, *parents;
    Py_ssize_t start, end, cap;
    if (!PyArg_ParseTuple(args, "O!nnO!n", &PyList_Type, &ids, &start, &end, &PyDict_Type, &parents, &cap)) return NULL;
    if (start < 0 || end > PyList_GET_SIZE(ids) || start > end) {
        PyErr_SetString(PyExc_IndexError, "run out of range");
        return NULL;
    }
    int root = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        PyObject *triple = PyList_GET_ITEM(ids, i);
        if (!id_triple(triple)) return NULL;
        PyObject *parent = PyTuple_GET_ITEM(triple, 2);
        if (PyDict_GET_SIZE(parents) < cap && PyDict_SetItem(parents, PyTuple_GET_ITEM(triple, 1), parent) < 0) return NULL;
        if (PyBytes_GET_SIZE(parent) == 0) root = 1;
    }
    return PyBool_FromLong(root);
}

/* walk_owners(ids, start, end, parents, agents, pending, at_root, max_chain)
 *   -> (owners, pending indexes, at-root indexes)
 * For each span of the run: its nearest agent at or above it (agents: span_id -> agent;
 * None for a trace without agents), else ``at_root`` when its ancestry reaches the trace's
 * root without one, else ``pending`` (an ancestor has not arrived, or the chain is longer
 * than max_chain). The indexes are those of the whole ids list; at-root indexes are listed
 * only when ``at_root`` is not None. */
static PyObject *walk_owners(PyObject *self, PyObject *args) {
    PyObject *ids, *parents, *agents, *pending, *at_root;
    Py_ssize_t start, end, max_chain;
    if (!PyArg_ParseTuple(args, "O!nnO!OOOn", &PyList_Type, &ids, &start, &end, &PyDict_Type, &parents, &agents,
                          &pending, &at_root, &max_chain))
        return NULL;
    if (start < 0 || end > PyList_GET_SIZE(ids) || start > end) {
        PyErr_SetString(PyExc_IndexError, "run out of range");
        return NULL;
    }
    if (agents != Py_None && !PyDict_Check(agents)) {
        PyErr_SetString(PyExc_TypeError, "agents is a dict or None");
        return NULL;
    }
    int with_agents = agents != Py_None && PyDict_GET_SIZE(agents) > 0;
    PyObject *owners = PyList_New(end - start), *held = PyList_New(0), *roots = PyList_New(0);
    if (owners == NULL || held == NULL || roots == NULL) goto error;
    for (Py_ssize_t i = start; i < end; i++) {
        PyObject *triple = PyList_GET_ITEM(ids, i);
        if (!id_triple(triple)) goto error;
        PyObject *current = PyTuple_GET_ITEM(triple, 1), *owner = pending;
        for (Py_ssize_t step = 0; step < max_chain; step++) {
            if (with_agents) {
                PyObject *agent = PyDict_GetItemWithError(agents, current);
                if (agent != NULL) {
                    owner = agent;
                    break;
                }
                if (PyErr_Occurred()) goto error;
            }
            PyObject *parent = PyDict_GetItemWithError(parents, current);
            if (parent == NULL) {
                if (PyErr_Occurred()) goto error;
                break; /* a gap: that ancestor has not arrived */
            }
            if (!PyBytes_CheckExact(parent)) {
                PyErr_SetString(PyExc_TypeError, "parent span ids are bytes");
                goto error;
            }
            if (PyBytes_GET_SIZE(parent) == 0) {
                owner = at_root;
                break;
            }
            current = parent;
        }
        Py_INCREF(owner);
        PyList_SET_ITEM(owners, i - start, owner);
        if (owner == pending || (owner == at_root && at_root != Py_None)) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL) goto error;
            int failed = PyList_Append(owner == pending ? held : roots, index) < 0;
            Py_DECREF(index);
            if (failed) goto error;
        }
    }
    PyObject *result = PyTuple_Pack(3, owners, held, roots);
    Py_DECREF(owners);
    Py_DECREF(held);
    Py_DECREF(roots);
    return result;
error:
    Py_XDECREF(owners);
    Py_XDECREF(held);
    Py_XDECREF(roots);
    return NULL;
}

/* contained_runs(ids, bounds, special, max_run) -> [start, ...]
 * The starts of the runs (``bounds`` as trace_runs gives them) that need no trace state:
 * at most max_run spans (at most 64), no two with one span id, none whose index is in
 * ``special`` (a sorted list of ints: the spans that name an agent, a group or a link), and
 * every span's ancestry reaching a root span within the run. A larger run is not looked at. */
#define CONTAINED_MAX_RUN 64
#define ROOT (-1)
#define MISSING (-2)

static int same_id(PyObject *a, PyObject *b) {
    return PyBytes_GET_SIZE(a) == PyBytes_GET_SIZE(b) && memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), PyBytes_GET_SIZE(a)) == 0;
}

/* Whether every span of ids[start:end] has its whole ancestry among them. */
static int run_is_contained(PyObject *ids, Py_ssize_t start, Py_ssize_t end, int *error) {
    Py_ssize_t count = end - start;
    PyObject *spans[CONTAINED_MAX_RUN], *parents[CONTAINED_MAX_RUN];
    int parent_of[CONTAINED_MAX_RUN];
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *triple = PyList_GET_ITEM(ids, start + i);
        if (!id_triple(triple)) {
            *error = 1;
            return 0;
        }
        spans[i] = PyTuple_GET_ITEM(triple, 1);
        parents[i] = PyTuple_GET_ITEM(triple, 2);
        for (Py_ssize_t j = 0; j < i; j++)
            if (same_id(spans[i], spans[j])) return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        parent_of[i] = PyBytes_GET_SIZE(parents[i]) == 0 ? ROOT : MISSING;
        for (Py_ssize_t j = 0; j < count && parent_of[i] == MISSING; j++)
            if (same_id(parents[i], spans[j])) parent_of[i] = (int)j;
        if (parent_of[i] == MISSING) return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        int current = (int)i;
        for (Py_ssize_t step = 0; step < count && parent_of[current] != ROOT; step++) current = parent_of[current];
        if (parent_of[current] != ROOT) return 0; /* a cycle */
    }
    return 1;
}

static PyObject *contained_runs(PyObject *self, PyObject *args) {
    PyObject *ids, *bounds, *special;
    Py_ssize_t max_run;
    if (!PyArg_ParseTuple(args, "O!O!O!n", &PyList_Type, &ids, &PyList_Type, &bounds, &PyList_Type, &special, &max_run))
        return NULL;
    if (max_run > CONTAINED_MAX_RUN) max_run = CONTAINED_MAX_RUN;
    PyObject *starts = PyList_New(0);
    if (starts == NULL) return NULL;
    Py_ssize_t specials = PyList_GET_SIZE(special), next = 0, next_index = -1;
    for (Py_ssize_t k = 0; k + 1 < PyList_GET_SIZE(bounds); k += 2) {
        PyObject *start_object = PyList_GET_ITEM(bounds, k);
        Py_ssize_t start = PyLong_AsSsize_t(start_object), end = PyLong_AsSsize_t(PyList_GET_ITEM(bounds, k + 1));
        if (PyErr_Occurred()) goto error;
        if (start < 0 || end > PyList_GET_SIZE(ids) || start > end) {
            PyErr_SetString(PyExc_IndexError, "run out of range");
            goto error;
        }
        while (next < specials) {
            next_index = PyLong_AsSsize_t(PyList_GET_ITEM(special, next));
            if (next_index == -1 && PyErr_Occurred()) goto error;
            if (next_index >= start) break;
            next++;
        }
        if (next < specials && next_index < end) continue;
        if (end - start > max_run) continue;
        int failed = 0;
        if (run_is_contained(ids, start, end, &failed) && PyList_Append(starts, start_object) < 0) goto error;
        if (failed) goto error;
    }
    return starts;
error:
    Py_DECREF(starts);
    return NULL;
}

static PyMethodDef methods[] = {
    {"trace_runs", trace_runs, METH_VARARGS, "trace_runs(ids) -> [start, end, ...] of runs of one trace"},
    {"record_parents", record_parents, METH_VARARGS,
     "record_parents(ids, start, end, parents, cap) -> whether a root span was recorded"},
    {"walk_owners", walk_owners, METH_VARARGS,
     "walk_owners(ids, start, end, parents, agents, pending, at_root, max_chain) -> (owners, pending, at_root)"},
    {"contained_runs", contained_runs, METH_VARARGS,
     "contained_runs(ids, bounds, special, max_run) -> starts of the runs whose ancestry is complete within them"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ancestry", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ancestry(void) { return PyModule_Create(&module); }
