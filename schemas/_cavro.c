/* The Avro binary decoder of schemas/_decoder.py, in C (and the sink's per-record reading).
 *
 * _decoder.compile_decoder() turns a schema into a tree of nested tuples (a "program"); here
 * Program(tree, split) turns that into C nodes once, and calling it decodes one value:
 *
 *     program(data, pos) -> (value, end)            split < 0
 *     program(data, pos) -> (value, end, split_pos) split = index of a field of the top record
 *
 * It returns exactly what the compiled Python decoder returns (dicts in field order, bytes, str,
 * int, float, bool, None, lists) and raises the same kinds of errors: EOFError for data cut
 * short, ValueError for malformed data, UnicodeDecodeError for strings that are not UTF-8.
 *
 * Node kinds (first item of each tuple):
 *   0 null, 1 boolean, 2 int/long, 3 float, 4 double, 5 bytes, 6 string   (kind,)
 *   7 record   (7, (name, ...), (node, ...))
 *   8 enum     (8, (symbol, ...))
 *   9 fixed    (9, size)
 *   10 array   (10, item node)
 *   11 map     (11, value node)
 *   12 union   (12, index of null, the other branch's node)
 *
 * sink_block(data, framing, prefix, offset) is the sink's per-record work (sinks/_avro.py): the id
 * and start time of a record framed with ``framing``, and the record as a block of the insert's
 * Avro container, without decoding the rest of it.
 *
 * Writer(tree, fallback) is the encoder's fast path (schemas/_encoder.py): the same bytes as the
 * generated Python encoder for records of plain builtin types, and that encoder for the rest.
 *
 * json_key_gate(words, text) is the deep redactor's first check of a body (producers/_deep.py):
 * whether a JSON key in it may be one to redact.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum {
    K_NULL, K_BOOLEAN, K_LONG, K_FLOAT, K_DOUBLE, K_BYTES, K_STRING,
    K_RECORD, K_ENUM, K_FIXED, K_ARRAY, K_MAP, K_UNION, K_COUNT
};

typedef struct Node {
    int kind;
    Py_ssize_t n;            /* record: fields; enum: symbols; fixed: size */
    struct Node **children;  /* record: n fields; array, map, union: one */
    PyObject **names;        /* record: field names; enum: symbols (owned references) */
    int null_index;          /* union */
} Node;

typedef struct {
    const unsigned char *p;
    Py_ssize_t len;
    Py_ssize_t pos;
} Reader;

/* -- building the tree ------------------------------------------------------------------------ */

static void free_node(Node *node) {
    if (node == NULL) return;
    Py_ssize_t children = node->kind == K_RECORD ? node->n
                          : (node->kind == K_ARRAY || node->kind == K_MAP || node->kind == K_UNION) ? 1
                          : 0;
    if (node->children != NULL) {
        for (Py_ssize_t i = 0; i < children; i++) free_node(node->children[i]);
        PyMem_Free(node->children);
    }
    if (node->names != NULL) {
        for (Py_ssize_t i = 0; i < node->n; i++) Py_XDECREF(node->names[i]);
        PyMem_Free(node->names);
    }
    PyMem_Free(node);
}

static int bad_program(const char *what) {
    PyErr_Format(PyExc_TypeError, "invalid decoder program: %s", what);
    return -1;
}

/* Deeper trees are refused: building and reading recurse once per level (no schema here comes
 * near it; a hand-made tree could otherwise exhaust the C stack). */
#define MAX_DEPTH 100

static Node *build_node(PyObject *spec, int depth);

static int take_names(Node *node, PyObject *names, int strings_only) {
    if (!PyTuple_Check(names)) return bad_program("names must be a tuple");
    node->n = PyTuple_GET_SIZE(names);
    node->names = PyMem_Calloc(node->n ? node->n : 1, sizeof(PyObject *));
    if (node->names == NULL) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < node->n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (strings_only && !PyUnicode_Check(name)) return bad_program("a name is not a str");
        /* An exact str, copied from a subclass: the writer looks names up in records' dicts, and
         * a subclass's __hash__ or __eq__ would run Python code while it holds borrowed values. */
        name = PyUnicode_CheckExact(name) ? Py_NewRef(name) : PyUnicode_FromObject(name);
        if (name == NULL) return -1;
        PyUnicode_InternInPlace(&name);
        node->names[i] = name;
    }
    return 0;
}

static int take_child(Node *node, PyObject *spec, int depth) {
    node->children = PyMem_Calloc(1, sizeof(Node *));
    if (node->children == NULL) { PyErr_NoMemory(); return -1; }
    node->children[0] = build_node(spec, depth);
    return node->children[0] == NULL ? -1 : 0;
}

static Node *build_node(PyObject *spec, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "the schema is nested deeper than %d levels", MAX_DEPTH);
        return NULL;
    }
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1) {
        bad_program("a node must be a non-empty tuple");
        return NULL;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    if (kind == -1 && PyErr_Occurred()) return NULL;
    if (kind < 0 || kind >= K_COUNT) {
        bad_program("unknown node kind");
        return NULL;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(spec);
    Node *node = PyMem_Calloc(1, sizeof(Node));
    if (node == NULL) return (Node *)PyErr_NoMemory();
    node->kind = (int)kind;
    int failed = 0;
    switch (kind) {
    case K_RECORD: {
        if (size != 3 || !PyTuple_Check(PyTuple_GET_ITEM(spec, 2))) { failed = bad_program("record"); break; }
        PyObject *fields = PyTuple_GET_ITEM(spec, 2);
        if (take_names(node, PyTuple_GET_ITEM(spec, 1), 1) < 0) { failed = 1; break; }
        if (PyTuple_GET_SIZE(fields) != node->n) { failed = bad_program("record fields"); break; }
        node->children = PyMem_Calloc(node->n ? node->n : 1, sizeof(Node *));
        if (node->children == NULL) { PyErr_NoMemory(); failed = 1; break; }
        for (Py_ssize_t i = 0; i < node->n && !failed; i++) {
            node->children[i] = build_node(PyTuple_GET_ITEM(fields, i), depth + 1);
            failed = node->children[i] == NULL;
        }
        break;
    }
    case K_ENUM:
        if (size != 2) { failed = bad_program("enum"); break; }
        failed = take_names(node, PyTuple_GET_ITEM(spec, 1), 1) < 0;
        break;
    case K_FIXED:
        if (size != 2) { failed = bad_program("fixed"); break; }
        node->n = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 1));
        failed = node->n < 0 && (PyErr_Occurred() || bad_program("fixed size"));
        break;
    case K_ARRAY:
    case K_MAP:
        if (size != 2) { failed = bad_program("array or map"); break; }
        failed = take_child(node, PyTuple_GET_ITEM(spec, 1), depth + 1) < 0;
        break;
    case K_UNION: {
        if (size != 3) { failed = bad_program("union"); break; }
        long null_index = PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
        if (null_index != 0 && null_index != 1) { failed = PyErr_Occurred() || bad_program("union"); break; }
        node->null_index = (int)null_index;
        failed = take_child(node, PyTuple_GET_ITEM(spec, 2), depth + 1) < 0;
        break;
    }
    default:
        if (size != 1) failed = bad_program("primitive");
    }
    if (failed) {
        free_node(node);
        return NULL;
    }
    return node;
}

/* -- reading ---------------------------------------------------------------------------------- */

static int short_data(Reader *r, Py_ssize_t need) {
    PyErr_Format(PyExc_EOFError, "expected %zd more bytes", need - (r->len - r->pos));
    return -1;
}

static inline int read_long(Reader *r, int64_t *out) {
    const unsigned char *p = r->p;
    Py_ssize_t pos = r->pos;
    if (pos < r->len && p[pos] < 0x80) {  /* most numbers here fit in one byte */
        uint64_t n = p[pos];
        r->pos = pos + 1;
        *out = (int64_t)((n >> 1) ^ (0 - (n & 1)));
        return 0;
    }
    uint64_t n = 0;
    int shift = 0;
    for (;;) {
        if (pos >= r->len) { r->pos = pos; return short_data(r, 1); }
        unsigned char b = p[pos++];
        if (shift == 63 && (b & 0x7f) > 1) {
            PyErr_SetString(PyExc_ValueError, "varint does not fit in 64 bits");
            return -1;
        }
        n |= (uint64_t)(b & 0x7f) << shift;
        if (b < 0x80) break;
        shift += 7;
        if (shift > 63) {
            PyErr_SetString(PyExc_ValueError, "varint longer than 10 bytes");
            return -1;
        }
    }
    r->pos = pos;
    *out = (int64_t)((n >> 1) ^ (0 - (n & 1)));
    return 0;
}

/* The next length-prefixed run of bytes: its start in *start, its length returned (-1: error). */
static inline Py_ssize_t read_run(Reader *r, const unsigned char **start) {
    int64_t n;
    if (read_long(r, &n) < 0) return -1;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "negative length %lld", (long long)n);
        return -1;
    }
    if (n > (int64_t)(r->len - r->pos)) return short_data(r, (Py_ssize_t)(n > PY_SSIZE_T_MAX / 2 ? PY_SSIZE_T_MAX / 2 : n));
    *start = r->p + r->pos;
    r->pos += (Py_ssize_t)n;
    return (Py_ssize_t)n;
}

static PyObject *read_value(const Node *node, Reader *r);

static PyObject *read_record(const Node *node, Reader *r, Py_ssize_t split_field, Py_ssize_t *split_pos) {
    PyObject *record = PyDict_New();
    if (record == NULL) return NULL;
    for (Py_ssize_t i = 0; i < node->n; i++) {
        if (i == split_field) *split_pos = r->pos;
        PyObject *value = read_value(node->children[i], r);
        if (value == NULL || PyDict_SetItem(record, node->names[i], value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(record);
            return NULL;
        }
        Py_DECREF(value);
    }
    return record;
}

static PyObject *read_blocks(const Node *node, Reader *r) {
    int is_map = node->kind == K_MAP;
    PyObject *out = is_map ? PyDict_New() : PyList_New(0);
    if (out == NULL) return NULL;
    const Node *item = node->children[0];
    for (;;) {
        int64_t count;
        if (read_long(r, &count) < 0) goto fail;
        if (count == 0) break;
        if (count < 0) {
            int64_t block_size;  /* the block's size in bytes: not needed to read it */
            if (read_long(r, &block_size) < 0) goto fail;
            if (count == INT64_MIN) {
                PyErr_SetString(PyExc_ValueError, "block count beyond the data");
                goto fail;
            }
            count = -count;
        }
        /* Every item takes at least one byte here, so a count beyond the data is malformed. */
        if (count > (int64_t)(r->len - r->pos)) {
            PyErr_SetString(PyExc_ValueError, "block count beyond the data");
            goto fail;
        }
        for (int64_t i = 0; i < count; i++) {
            if (is_map) {
                const unsigned char *start;
                Py_ssize_t n = read_run(r, &start);
                if (n < 0) goto fail;
                PyObject *key = PyUnicode_DecodeUTF8((const char *)start, n, NULL);
                if (key == NULL) goto fail;
                PyObject *value = read_value(item, r);
                if (value == NULL) { Py_DECREF(key); goto fail; }
                int failed = PyDict_SetItem(out, key, value) < 0;
                Py_DECREF(key);
                Py_DECREF(value);
                if (failed) goto fail;
            } else {
                PyObject *value = read_value(item, r);
                if (value == NULL) goto fail;
                int failed = PyList_Append(out, value) < 0;
                Py_DECREF(value);
                if (failed) goto fail;
            }
        }
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *read_value(const Node *node, Reader *r) {
    const unsigned char *start;
    Py_ssize_t n;
    int64_t v;
    switch (node->kind) {
    case K_NULL:
        Py_RETURN_NONE;
    case K_BOOLEAN: {
        if (r->pos >= r->len) { short_data(r, 1); return NULL; }
        unsigned char b = r->p[r->pos++];
        if (b > 1) {
            PyErr_SetString(PyExc_ValueError, "invalid boolean byte");
            return NULL;
        }
        return PyBool_FromLong(b);
    }
    case K_LONG:
        if (read_long(r, &v) < 0) return NULL;
        return PyLong_FromLongLong(v);
    case K_FLOAT:
    case K_DOUBLE: {
        int size = node->kind == K_FLOAT ? 4 : 8;
        if (r->len - r->pos < size) { short_data(r, size); return NULL; }
        const char *at = (const char *)r->p + r->pos;
        double d = size == 4 ? PyFloat_Unpack4(at, 1) : PyFloat_Unpack8(at, 1);
        if (d == -1.0 && PyErr_Occurred()) return NULL;
        r->pos += size;
        return PyFloat_FromDouble(d);
    }
    case K_BYTES:
        n = read_run(r, &start);
        if (n < 0) return NULL;
        return PyBytes_FromStringAndSize((const char *)start, n);
    case K_STRING:
        n = read_run(r, &start);
        if (n < 0) return NULL;
        return PyUnicode_DecodeUTF8((const char *)start, n, NULL);
    case K_RECORD:
        return read_record(node, r, -1, NULL);
    case K_ENUM:
        if (read_long(r, &v) < 0) return NULL;
        if (v < 0 || v >= node->n) {
            PyErr_Format(PyExc_ValueError, "enum index %lld out of range", (long long)v);
            return NULL;
        }
        Py_INCREF(node->names[v]);
        return node->names[v];
    case K_FIXED:
        if (r->len - r->pos < node->n) { short_data(r, node->n); return NULL; }
        r->pos += node->n;
        return PyBytes_FromStringAndSize((const char *)r->p + r->pos - node->n, node->n);
    case K_ARRAY:
    case K_MAP:
        return read_blocks(node, r);
    case K_UNION: {
        /* The branch index is 0 or 1: one byte, 0 or 2 once zigzag-encoded. */
        if (r->pos >= r->len) { short_data(r, 1); return NULL; }
        unsigned char b = r->p[r->pos++];
        if (b == 2 * node->null_index) Py_RETURN_NONE;
        if (b == 2 * (1 - node->null_index)) return read_value(node->children[0], r);
        PyErr_Format(PyExc_ValueError, "union branch byte %d out of range", (int)b);
        return NULL;
    }
    }
    PyErr_SetString(PyExc_SystemError, "unknown node kind");
    return NULL;
}

/* -- the Program type ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Node *root;
    Py_ssize_t split;  /* index of a field of the top record, or -1 */
} Program;

static void Program_dealloc(Program *self) {
    free_node(self->root);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Program_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *tree;
    Py_ssize_t split = -1;
    static char *keywords[] = {"tree", "split", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|n", keywords, &tree, &split)) return NULL;
    Node *root = build_node(tree, 0);
    if (root == NULL) return NULL;
    if (split >= 0 && (root->kind != K_RECORD || split >= root->n)) {
        free_node(root);
        PyErr_SetString(PyExc_ValueError, "split must be the index of a field of the top record");
        return NULL;
    }
    Program *self = (Program *)type->tp_alloc(type, 0);
    if (self == NULL) {
        free_node(root);
        return NULL;
    }
    self->root = root;
    self->split = split < 0 ? -1 : split;
    return (PyObject *)self;
}

static PyObject *Program_call(Program *self, PyObject *args, PyObject *kwargs) {
    Py_buffer data;
    Py_ssize_t pos;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "decode(data, pos) takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*n", &data, &pos)) return NULL;
    if (pos < 0 || pos > data.len) {
        PyBuffer_Release(&data);
        PyErr_Format(PyExc_IndexError, "position %zd outside the data", pos);
        return NULL;
    }
    Reader r = {(const unsigned char *)data.buf, data.len, pos};
    PyObject *value;
    Py_ssize_t split_pos = -1;
    if (self->split >= 0) value = read_record(self->root, &r, self->split, &split_pos);
    else value = read_value(self->root, &r);
    PyBuffer_Release(&data);
    if (value == NULL) return NULL;
    if (self->split >= 0) return Py_BuildValue("(Nnn)", value, r.pos, split_pos);
    return Py_BuildValue("(Nn)", value, r.pos);
}

static PyTypeObject ProgramType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trafficreel.schemas._cavro.Program",
    .tp_doc = PyDoc_STR("Program(tree, split=-1): decode(data, pos) -> (value, end[, split_pos])"),
    .tp_basicsize = sizeof(Program),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Program_new,
    .tp_dealloc = (destructor)Program_dealloc,
    .tp_call = (ternaryfunc)Program_call,
};


/* -- the sink's container block ------------------------------------------------------------- */

static Py_ssize_t put_long(unsigned char *out, int64_t value) {
    uint64_t n = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    Py_ssize_t i = 0;
    while (n >= 0x80) {
        out[i++] = (unsigned char)(n | 0x80);
        n >>= 7;
    }
    out[i++] = (unsigned char)n;
    return i;
}

/* sink_block(data, framing, prefix, offset) -> (id, start_time, (head, body)) | None
 *
 * None when ``data`` does not start with ``framing`` (another schema or framing). Otherwise the
 * Avro body after the framing starts with the record's id (string) and start time (long): they
 * are read, and the block is the container block of the record: ``head`` (block count 1, block
 * size, then ``prefix`` and ``offset`` — the Kafka coordinates) and ``body``, a memoryview of the
 * Avro body (not copied). EOFError or ValueError (UnicodeDecodeError included) when the id or
 * the start time cannot be read. */
static PyObject *sink_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "sink_block(data, framing, prefix, offset) takes 4 arguments");
        return NULL;
    }
    PyObject *data = args[0], *framing = args[1], *prefix = args[2];
    if (!PyBytes_Check(data) || !PyBytes_Check(framing) || !PyBytes_Check(prefix)) {
        PyErr_SetString(PyExc_TypeError, "sink_block: data, framing and prefix must be bytes");
        return NULL;
    }
    int64_t offset = PyLong_AsLongLong(args[3]);
    if (offset == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t start = PyBytes_GET_SIZE(framing);
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    if (len < start || memcmp(p, PyBytes_AS_STRING(framing), (size_t)start) != 0) Py_RETURN_NONE;
    Reader r = {p, len, start};
    const unsigned char *id_start;
    Py_ssize_t id_len = read_run(&r, &id_start);
    if (id_len < 0) return NULL;
    int64_t start_time;
    if (read_long(&r, &start_time) < 0) return NULL;
    PyObject *record_id = PyUnicode_DecodeUTF8((const char *)id_start, id_len, NULL);
    if (record_id == NULL) return NULL;
    /* head: count (1), size of what follows it (coordinates + body), coordinates */
    unsigned char coordinates_offset[10], size[10];
    Py_ssize_t offset_len = put_long(coordinates_offset, offset);
    Py_ssize_t prefix_len = PyBytes_GET_SIZE(prefix);
    Py_ssize_t size_len = put_long(size, (int64_t)(prefix_len + offset_len + (len - start)));
    PyObject *head = PyBytes_FromStringAndSize(NULL, 1 + size_len + prefix_len + offset_len);
    PyObject *view = NULL, *body = NULL, *result = NULL;
    if (head == NULL) goto done;
    unsigned char *h = (unsigned char *)PyBytes_AS_STRING(head);
    h[0] = 0x02;
    memcpy(h + 1, size, (size_t)size_len);
    memcpy(h + 1 + size_len, PyBytes_AS_STRING(prefix), (size_t)prefix_len);
    memcpy(h + 1 + size_len + prefix_len, coordinates_offset, (size_t)offset_len);
    view = PyMemoryView_FromObject(data);
    if (view == NULL) goto done;
    body = PySequence_GetSlice(view, start, len);
    if (body == NULL) goto done;
    result = Py_BuildValue("(NL(OO))", record_id, (long long)start_time, head, body);
    record_id = NULL;  /* stolen by Py_BuildValue ("N"), even when it failed */
done:
    Py_XDECREF(record_id);
    Py_XDECREF(head);
    Py_XDECREF(view);
    Py_XDECREF(body);
    return result;
}

/* -- the encoder's fast path ---------------------------------------------------------------------
 *
 * Writer(tree, fallback): ``writer(record, out)`` appends the Avro encoding of ``record`` to the
 * bytearray ``out``, the same bytes as the generated Python encoder (``fallback``). It runs in
 * the recorded app's process, so it reads only what cannot run Python code while it reads: dicts
 * (all keys str), lists, tuples, str, bytes, int, float, bool and None, of exactly those types.
 * Anything else (a subclass, a missing field, a value the schema does not take, an int too large
 * for a long, a str that is not valid UTF-8) leaves it to ``fallback`` with ``out`` untouched,
 * which writes it or raises its own error. While it writes, no Python code runs and no object
 * that the garbage collector tracks is made (the bytes go to a buffer of its own until the end),
 * so the references it borrows stay valid and no other thread sees the record half read. */

#define W_FALLBACK 1 /* a write_* result: leave the record to the Python encoder */

typedef struct {
    char *p;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_grow(Buf *b, Py_ssize_t more) {
    if (more > PY_SSIZE_T_MAX / 4 - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int w_bytes(Buf *b, const void *data, Py_ssize_t n) {
    if (n == 0) return 0; /* fixed(0): nothing to copy, and b->p may still be NULL */
    if (n > b->cap - b->len && buf_grow(b, n) < 0) return -1;
    memcpy(b->p + b->len, data, (size_t)n);
    b->len += n;
    return 0;
}

static inline int w_long(Buf *b, int64_t v) {
    if (10 > b->cap - b->len && buf_grow(b, 10) < 0) return -1;
    b->len += put_long((unsigned char *)b->p + b->len, v);
    return 0;
}

static inline int w_run(Buf *b, const void *data, Py_ssize_t n) {
    if (w_long(b, (int64_t)n) < 0) return -1;
    return w_bytes(b, data, n);
}

/* Whether every key of an exact dict is an exact str: then looking a str up in it compares
 * strings only (no __eq__ or __hash__ of the caller's). */
static int str_keys_only(PyObject *dict) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) return 0;
    }
    return 1;
}

static int w_value(const Node *node, PyObject *value, Buf *b);

static int w_str(PyObject *value, Buf *b) {
    if (!PyUnicode_CheckExact(value)) return W_FALLBACK;
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &size);
    if (utf8 == NULL) { /* lone surrogates: Python's UnicodeEncodeError */
        PyErr_Clear();
        return W_FALLBACK;
    }
    return w_run(b, utf8, size);
}

static int w_record(const Node *node, PyObject *value, Buf *b, int pairs_allowed) {
    if (pairs_allowed && (PyTuple_CheckExact(value) || PyList_CheckExact(value))) {
        /* An array item of record type given as its fields in order ((name, value) headers). */
        if (PySequence_Fast_GET_SIZE(value) != node->n) return W_FALLBACK;
        PyObject **items = PySequence_Fast_ITEMS(value);
        for (Py_ssize_t i = 0; i < node->n; i++) {
            int r = w_value(node->children[i], items[i], b);
            if (r) return r;
        }
        return 0;
    }
    if (!PyDict_CheckExact(value) || !str_keys_only(value)) return W_FALLBACK;
    for (Py_ssize_t i = 0; i < node->n; i++) {
        PyObject *field = PyDict_GetItemWithError(value, node->names[i]);
        if (field == NULL) return PyErr_Occurred() ? -1 : W_FALLBACK; /* missing: its default, in Python */
        int r = w_value(node->children[i], field, b);
        if (r) return r;
    }
    return 0;
}

static int w_blocks(const Node *node, PyObject *value, Buf *b) {
    const Node *item = node->children[0];
    if (node->kind == K_MAP) {
        if (!PyDict_CheckExact(value) || !str_keys_only(value)) return W_FALLBACK;
        Py_ssize_t n = PyDict_GET_SIZE(value);
        if (n && w_long(b, (int64_t)n) < 0) return -1;
        Py_ssize_t pos = 0;
        PyObject *key, *val;
        while (PyDict_Next(value, &pos, &key, &val)) {
            int r = w_str(key, b);
            if (!r) r = w_value(item, val, b);
            if (r) return r;
        }
        return w_bytes(b, "", 1); /* the end of the blocks */
    }
    if (!PyList_CheckExact(value) && !PyTuple_CheckExact(value)) return W_FALLBACK;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(value);
    if (n && w_long(b, (int64_t)n) < 0) return -1;
    PyObject **items = PySequence_Fast_ITEMS(value);
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = item->kind == K_RECORD ? w_record(item, items[i], b, 1) : w_value(item, items[i], b);
        if (r) return r;
    }
    return w_bytes(b, "", 1); /* the end of the blocks */
}

static int w_value(const Node *node, PyObject *value, Buf *b) {
    switch (node->kind) {
    case K_NULL:
        return value == Py_None ? 0 : W_FALLBACK;
    case K_BOOLEAN:
        if (value == Py_True) return w_bytes(b, "\x01", 1);
        if (value == Py_False) return w_bytes(b, "", 1);
        return W_FALLBACK;
    case K_LONG: {
        if (!PyLong_CheckExact(value)) return W_FALLBACK;
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) return W_FALLBACK;
        if (v == -1 && PyErr_Occurred()) return -1;
        return w_long(b, (int64_t)v);
    }
    case K_FLOAT:
    case K_DOUBLE: {
        if (!PyFloat_CheckExact(value)) return W_FALLBACK;
        int size = node->kind == K_FLOAT ? 4 : 8;
        if (size > b->cap - b->len && buf_grow(b, size) < 0) return -1;
        double d = PyFloat_AS_DOUBLE(value);
        /* A float too large for 4 bytes raises OverflowError in Python: its error, not ours. */
        if ((size == 4 ? PyFloat_Pack4(d, b->p + b->len, 1) : PyFloat_Pack8(d, b->p + b->len, 1)) < 0) {
            PyErr_Clear();
            return W_FALLBACK;
        }
        b->len += size;
        return 0;
    }
    case K_BYTES:
        if (!PyBytes_CheckExact(value)) return W_FALLBACK;
        return w_run(b, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    case K_FIXED:
        if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) != node->n) return W_FALLBACK;
        return w_bytes(b, PyBytes_AS_STRING(value), node->n);
    case K_STRING:
        return w_str(value, b);
    case K_RECORD:
        return w_record(node, value, b, 0);
    case K_ENUM:
        if (!PyUnicode_CheckExact(value)) return W_FALLBACK;
        /* From the last: a symbol listed twice takes its last index, as in the Python encoder. */
        for (Py_ssize_t i = node->n - 1; i >= 0; i--) {
            if (node->names[i] == value || PyUnicode_Compare(node->names[i], value) == 0) return w_long(b, (int64_t)i);
        }
        return W_FALLBACK;
    case K_ARRAY:
    case K_MAP:
        return w_blocks(node, value, b);
    case K_UNION:
        if (value == Py_None) return w_long(b, (int64_t)node->null_index);
        if (w_long(b, (int64_t)(1 - node->null_index)) < 0) return -1;
        return w_value(node->children[0], value, b);
    }
    return W_FALLBACK;
}

typedef struct {
    PyObject_HEAD
    Node *root;
    PyObject *fallback;
} Writer;

static void Writer_dealloc(Writer *self) {
    free_node(self->root);
    Py_XDECREF(self->fallback);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Writer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *tree, *fallback;
    static char *keywords[] = {"tree", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO", keywords, &tree, &fallback)) return NULL;
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "Writer: fallback must be callable");
        return NULL;
    }
    Node *root = build_node(tree, 0);
    if (root == NULL) return NULL;
    Writer *self = (Writer *)type->tp_alloc(type, 0);
    if (self == NULL) {
        free_node(root);
        return NULL;
    }
    self->root = root;
    Py_INCREF(fallback);
    self->fallback = fallback;
    return (PyObject *)self;
}

static PyObject *Writer_call(Writer *self, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) != 2 || (kwargs != NULL && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "encode(record, out) takes two positional arguments");
        return NULL;
    }
    PyObject *record = PyTuple_GET_ITEM(args, 0), *out = PyTuple_GET_ITEM(args, 1);
    if (!PyByteArray_CheckExact(out)) return PyObject_Call(self->fallback, args, kwargs);
    Buf b = {NULL, 0, 0};
    int r = w_value(self->root, record, &b);
    if (r == 0 && b.len) {
        Py_ssize_t start = PyByteArray_GET_SIZE(out);
        r = PyByteArray_Resize(out, start + b.len);
        if (r == 0) memcpy(PyByteArray_AS_STRING(out) + start, b.p, (size_t)b.len);
    }
    PyMem_Free(b.p);
    if (r < 0) return NULL;
    if (r == W_FALLBACK) return PyObject_Call(self->fallback, args, kwargs);
    Py_RETURN_NONE;
}

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trafficreel.schemas._cavro.Writer",
    .tp_doc = PyDoc_STR("Writer(tree, fallback): writer(record, out) appends the record's Avro to the bytearray out"),
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Writer_new,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_call = (ternaryfunc)Writer_call,
};

/* -- the deep redactor's gate for JSON keys ------------------------------------------------------
 *
 * json_key_gate(words, text) -> bool: whether some ':' in ``text`` follows, once ASCII letters are
 * lowercased and '-', '_' and '.' are left out (as the key rule compares keys), optional
 * whitespace, a '"', optional backslashes (a key of JSON held in a JSON string), an optional 's'
 * (a plural) and one of ``words`` (lowercase, without '-', '_' and '.'): a JSON key that is, or
 * ends in, a listed word. The same test as the regex the pure-Python code runs over the reversed,
 * squeezed text, in one pass and without copies. A superset gate: the precise rules run after it.
 * Only reads ``text``'s bytes (held through the buffer protocol); calls no Python code. */

static inline int squeezed_out(unsigned char c) { return c == '-' || c == '_' || c == '.'; }

static inline Py_ssize_t back(const unsigned char *s, Py_ssize_t j) {
    while (j >= 0 && squeezed_out(s[j])) j--;
    return j;
}

static int word_ends_at(const unsigned char *s, Py_ssize_t j, const unsigned char *w, Py_ssize_t n) {
    for (Py_ssize_t k = n - 1; k >= 0; k--) {
        j = back(s, j);
        if (j < 0 || Py_TOLOWER(s[j]) != w[k]) return 0;
        j--;
    }
    return 1;
}

/* Whether the text before and at j ends in a word, or a word then an 's' (a plural). */
static int word_at(PyObject *words, Py_ssize_t count, const unsigned char *last, const unsigned char *s,
                   Py_ssize_t j) {
    Py_ssize_t plural = Py_TOLOWER(s[j]) == 's' ? back(s, j - 1) : -1;
    if (!last[Py_TOLOWER(s[j])] && (plural < 0 || !last[Py_TOLOWER(s[plural])])) return 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *w = PyTuple_GET_ITEM(words, k);
        const unsigned char *word = (const unsigned char *)PyBytes_AS_STRING(w);
        Py_ssize_t n = PyBytes_GET_SIZE(w);
        if (word_ends_at(s, j, word, n) || (plural >= 0 && word_ends_at(s, plural, word, n))) return 1;
    }
    return 0;
}

static PyObject *json_key_gate(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "json_key_gate(words, text): words must be a tuple of bytes");
        return NULL;
    }
    PyObject *words = args[0];
    Py_ssize_t count = PyTuple_GET_SIZE(words);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *w = PyTuple_GET_ITEM(words, k);
        if (!PyBytes_Check(w) || PyBytes_GET_SIZE(w) == 0) {
            PyErr_SetString(PyExc_TypeError, "json_key_gate: words must be non-empty bytes");
            return NULL;
        }
    }
    unsigned char last[256] = {0}; /* the last letters of the words: most keys end in none */
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *w = PyTuple_GET_ITEM(words, k);
        last[(unsigned char)PyBytes_AS_STRING(w)[PyBytes_GET_SIZE(w) - 1]] = 1;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *s = (const unsigned char *)view.buf;
    Py_ssize_t len = view.len;
    int found = 0;
    const unsigned char *colon = s;
    while (!found && (colon = memchr(colon, ':', (size_t)(len - (colon - s)))) != NULL) {
        Py_ssize_t j = back(s, (colon - s) - 1);
        colon++;
        while (j >= 0 && Py_ISSPACE(s[j])) j = back(s, j - 1);
        if (j < 0 || s[j] != '"') continue;
        /* The key ends after any number of the backslashes before the quote: a word may itself
         * end in one, so each place in the run is tried, as the regex's backtracking does. */
        for (j = back(s, j - 1); j >= 0 && !found; j = s[j] == '\\' ? back(s, j - 1) : -1) {
            found = word_at(words, count, last, s, j);
        }
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(found);
}

static PyMethodDef functions[] = {
    {"sink_block", (PyCFunction)(void (*)(void))sink_block, METH_FASTCALL,
     PyDoc_STR("sink_block(data, framing, prefix, offset) -> (id, start_time, (head, body)) | None")},
    {"json_key_gate", (PyCFunction)(void (*)(void))json_key_gate, METH_FASTCALL,
     PyDoc_STR("json_key_gate(words, text) -> whether a JSON key in text is, or ends in, one of words")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "trafficreel.schemas._cavro",
    .m_doc = "The Avro binary decoder of trafficreel.schemas._decoder, the sink's container blocks, and "
             "the deep redactor's JSON key gate, in C.",
    .m_size = -1,
    .m_methods = functions,
};

PyMODINIT_FUNC PyInit__cavro(void) {
    if (PyType_Ready(&ProgramType) < 0 || PyType_Ready(&WriterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ProgramType);
    if (PyModule_AddObject(m, "Program", (PyObject *)&ProgramType) < 0) {
        Py_DECREF(&ProgramType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&WriterType);
    if (PyModule_AddObject(m, "Writer", (PyObject *)&WriterType) < 0) {
        Py_DECREF(&WriterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
