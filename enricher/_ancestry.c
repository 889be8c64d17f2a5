/* The attributor's two per-span loops (enricher/attribute.py), in C.
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

static PyMethodDef methods[] = {
    {"trace_runs", trace_runs, METH_VARARGS, "trace_runs(ids) -> [start, end, ...] of runs of one trace"},
    {"record_parents", record_parents, METH_VARARGS,
     "record_parents(ids, start, end, parents, cap) -> whether a root span was recorded"},
    {"walk_owners", walk_owners, METH_VARARGS,
     "walk_owners(ids, start, end, parents, agents, pending, at_root, max_chain) -> (owners, pending, at_root)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ancestry", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ancestry(void) { return PyModule_Create(&module); }
