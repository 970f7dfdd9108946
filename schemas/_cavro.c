/* The Avro binary decoder of schemas/_decoder.py, in C.
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
 * Writer(tree, memo) is the encoder's twin (of schemas/_encoder.py): ``writer(record, out)``
 * appends the Avro encoding of ``record`` to the bytearray ``out``, with the same checks and the
 * same exception types as the generated Python (TypeError, ValueError, KeyError, OverflowError).
 * A record node may carry a fourth item for it: per field ``()`` or ``(default,)``. ``memo`` lists
 * fields of the top record encoded once per distinct object (the recorder's constant source).
 *
 * Node kinds (first item of each tuple):
 *   0 null, 1 boolean, 2 int/long, 3 float, 4 double, 5 bytes, 6 string   (kind,)
 *   7 record   (7, (name, ...), (node, ...))
 *   8 enum     (8, (symbol, ...))
 *   9 fixed    (9, size)
 *   10 array   (10, item node)
 *   11 map     (11, value node)
 *   12 union   (12, index of null, the other branch's node)
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
    PyObject **defaults;     /* record, for the writer: each field's default, or NULL (owned) */
    PyObject *index;         /* enum, for the writer: {symbol: encoded index} (owned) */
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
    if (node->defaults != NULL) {
        for (Py_ssize_t i = 0; i < node->n; i++) Py_XDECREF(node->defaults[i]);
        PyMem_Free(node->defaults);
    }
    Py_XDECREF(node->index);
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
        Py_INCREF(name);
        if (PyUnicode_Check(name)) PyUnicode_InternInPlace(&name);
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
        if ((size != 3 && size != 4) || !PyTuple_Check(PyTuple_GET_ITEM(spec, 2))) {
            failed = bad_program("record");
            break;
        }
        PyObject *fields = PyTuple_GET_ITEM(spec, 2);
        if (take_names(node, PyTuple_GET_ITEM(spec, 1), 1) < 0) { failed = 1; break; }
        if (PyTuple_GET_SIZE(fields) != node->n) { failed = bad_program("record fields"); break; }
        if (size == 4) {
            PyObject *defaults = PyTuple_GET_ITEM(spec, 3);
            if (!PyTuple_Check(defaults) || PyTuple_GET_SIZE(defaults) != node->n) {
                failed = bad_program("record defaults");
                break;
            }
            node->defaults = PyMem_Calloc(node->n ? node->n : 1, sizeof(PyObject *));
            if (node->defaults == NULL) { PyErr_NoMemory(); failed = 1; break; }
            for (Py_ssize_t i = 0; i < node->n && !failed; i++) {
                PyObject *d = PyTuple_GET_ITEM(defaults, i);
                if (!PyTuple_Check(d) || PyTuple_GET_SIZE(d) > 1) { failed = bad_program("a default"); break; }
                if (PyTuple_GET_SIZE(d) == 1) {
                    node->defaults[i] = PyTuple_GET_ITEM(d, 0);
                    Py_INCREF(node->defaults[i]);
                }
            }
            if (failed) break;
        }
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
        if (failed) break;
        node->index = PyDict_New();
        failed = node->index == NULL;
        for (Py_ssize_t i = 0; i < node->n && !failed; i++) {
            PyObject *at = PyLong_FromSsize_t(i);
            failed = at == NULL || PyDict_SetItem(node->index, node->names[i], at) < 0;
            Py_XDECREF(at);
        }
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
    case K_FLOAT: {
        if (r->len - r->pos < 4) { short_data(r, 4); return NULL; }
        double d = PyFloat_Unpack4((const char *)r->p + r->pos, 1);
        if (d == -1.0 && PyErr_Occurred()) return NULL;
        r->pos += 4;
        return PyFloat_FromDouble(d);
    }
    case K_DOUBLE: {
        if (r->len - r->pos < 8) { short_data(r, 8); return NULL; }
        double d = PyFloat_Unpack8((const char *)r->p + r->pos, 1);
        if (d == -1.0 && PyErr_Occurred()) return NULL;
        r->pos += 8;
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


/* -- writing ---------------------------------------------------------------------------------- */

typedef struct {
    char *p;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_grow(Buf *b, Py_ssize_t more) {
    if (more > PY_SSIZE_T_MAX / 2 - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = b->cap ? b->cap : 1024;
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

static inline int put(Buf *b, const void *data, Py_ssize_t n) {
    if (b->len + n > b->cap && buf_grow(b, n) < 0) return -1;
    memcpy(b->p + b->len, data, (size_t)n);
    b->len += n;
    return 0;
}

static inline int put_byte(Buf *b, unsigned char c) {
    if (b->len + 1 > b->cap && buf_grow(b, 1) < 0) return -1;
    b->p[b->len++] = (char)c;
    return 0;
}

static inline int put_long(Buf *b, int64_t v) {
    if (b->len + 10 > b->cap && buf_grow(b, 10) < 0) return -1;
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    unsigned char *p = (unsigned char *)b->p + b->len;
    Py_ssize_t n = 0;
    while (z & ~(uint64_t)0x7f) {
        p[n++] = (unsigned char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    p[n++] = (unsigned char)z;
    b->len += n;
    return 0;
}

static int put_run(Buf *b, const void *data, Py_ssize_t n) {
    if (put_long(b, (int64_t)n) < 0) return -1;
    return put(b, data, n);
}

static int type_error(const char *expected, PyObject *value) {
    PyErr_Format(PyExc_TypeError, "expected %s, got %.100s", expected, Py_TYPE(value)->tp_name);
    return -1;
}

static int write_value(const Node *node, PyObject *value, Buf *b);

typedef struct {
    PyObject *object;  /* the last object seen for a memoised field (owned), or NULL */
    PyObject *bytes;   /* its encoding (owned) */
} Memo;

static int write_record(const Node *node, PyObject *value, Buf *b, int items_may_be_sequences,
                        Memo *memos) {
    if (!PyDict_CheckExact(value) && items_may_be_sequences && (PyTuple_Check(value) || PyList_Check(value))) {
        /* An array item of record type: its fields in order, e.g. (name, value) header pairs. */
        Py_ssize_t n = PySequence_Fast_GET_SIZE(value);
        if (n != node->n) {
            PyErr_Format(PyExc_ValueError, "expected %zd fields in order, got %zd", node->n, n);
            return -1;
        }
        PyObject **items = PySequence_Fast_ITEMS(value);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (write_value(node->children[i], items[i], b) < 0) return -1;
        }
        return 0;
    }
    int exact = PyDict_CheckExact(value);
    for (Py_ssize_t i = 0; i < node->n; i++) {
        PyObject *field;
        int owned = 0;
        if (exact) {
            field = PyDict_GetItemWithError(value, node->names[i]);
            if (field == NULL && PyErr_Occurred()) return -1;
        } else {
            field = PyObject_GetItem(value, node->names[i]);
            if (field == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_KeyError)) return -1;
                PyErr_Clear();
            }
            owned = field != NULL;
        }
        if (field == NULL) {
            if (node->defaults == NULL || node->defaults[i] == NULL) {
                PyErr_SetObject(PyExc_KeyError, node->names[i]);
                return -1;
            }
            field = node->defaults[i];
        }
        int failed;
        Memo *memo = memos != NULL ? &memos[i] : NULL;
        if (memo != NULL && memo->bytes != NULL && memo->object == field) {
            failed = put(b, PyBytes_AS_STRING(memo->bytes), PyBytes_GET_SIZE(memo->bytes));
        } else if (memo != NULL && memo->bytes != (PyObject *)-1) {
            /* Encode apart, keep the bytes for the next record that brings the same object. */
            Py_ssize_t start = b->len;
            failed = write_value(node->children[i], field, b);
            if (!failed) {
                PyObject *bytes = PyBytes_FromStringAndSize(b->p + start, b->len - start);
                if (bytes == NULL) {
                    failed = 1;
                } else {
                    Py_INCREF(field);
                    Py_XSETREF(memo->object, field);
                    Py_XSETREF(memo->bytes, bytes);
                }
            }
        } else {
            failed = write_value(node->children[i], field, b);
        }
        if (owned) Py_DECREF(field);
        if (failed) return -1;
    }
    return 0;
}

static int write_buffer(PyObject *value, Buf *b, Py_ssize_t fixed) {
    if (PyBytes_CheckExact(value)) {
        Py_ssize_t n = PyBytes_GET_SIZE(value);
        if (fixed >= 0) {
            if (n != fixed) {
                PyErr_Format(PyExc_ValueError, "fixed size is %zd", fixed);
                return -1;
            }
            return put(b, PyBytes_AS_STRING(value), n);
        }
        return put_run(b, PyBytes_AS_STRING(value), n);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(value, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return type_error("bytes", value);
    }
    int failed;
    if (fixed >= 0 && view.len != fixed) {
        PyErr_Format(PyExc_ValueError, "fixed size is %zd", fixed);
        failed = -1;
    } else {
        failed = fixed >= 0 ? put(b, view.buf, view.len) : put_run(b, view.buf, view.len);
    }
    PyBuffer_Release(&view);
    return failed;
}

static int write_blocks(const Node *node, PyObject *value, Buf *b) {
    const Node *item = node->children[0];
    /* As the generated Python does (``if value:``): anything empty or false is no items. */
    int truth = PyObject_IsTrue(value);
    if (truth < 0) return -1;
    if (!truth) return put_byte(b, 0);
    if (node->kind == K_MAP) {
        if (!PyDict_Check(value)) return type_error("a dict", value);
        Py_ssize_t n = PyDict_GET_SIZE(value);
        if (n) {
            if (put_long(b, (int64_t)n) < 0) return -1;
            Py_ssize_t pos = 0;
            PyObject *key, *val;
            while (PyDict_Next(value, &pos, &key, &val)) {
                if (!PyUnicode_Check(key)) return type_error("str keys", key);
                Py_ssize_t size;
                const char *utf8 = PyUnicode_AsUTF8AndSize(key, &size);
                if (utf8 == NULL || put_run(b, utf8, size) < 0) return -1;
                if (write_value(item, val, b) < 0) return -1;
            }
        }
        return put_byte(b, 0);
    }
    PyObject *seq = PySequence_Fast(value, "expected a list");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int failed = 0;
    if (n) {
        failed = put_long(b, (int64_t)n) < 0;
        PyObject **items = PySequence_Fast_ITEMS(seq);
        for (Py_ssize_t i = 0; i < n && !failed; i++) {
            if (item->kind == K_RECORD) failed = write_record(item, items[i], b, 1, NULL) < 0;
            else failed = write_value(item, items[i], b) < 0;
        }
    }
    Py_DECREF(seq);
    if (failed) return -1;
    return put_byte(b, 0);
}

static int write_value(const Node *node, PyObject *value, Buf *b) {
    switch (node->kind) {
    case K_NULL:
        if (value != Py_None) return type_error("null", value);
        return 0;
    case K_BOOLEAN:
        if (value == Py_True) return put_byte(b, 1);
        if (value == Py_False) return put_byte(b, 0);
        return type_error("a boolean", value);
    case K_LONG: {
        if (!PyLong_Check(value)) return type_error("an int", value);
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) {
            PyErr_Format(PyExc_OverflowError, "%R does not fit in an Avro long", value);
            return -1;
        }
        if (v == -1 && PyErr_Occurred()) return -1;
        return put_long(b, (int64_t)v);
    }
    case K_FLOAT:
    case K_DOUBLE: {
        double d = PyFloat_AsDouble(value);
        if (d == -1.0 && PyErr_Occurred()) return -1;
        int size = node->kind == K_FLOAT ? 4 : 8;
        if (b->len + size > b->cap && buf_grow(b, size) < 0) return -1;
        int packed = size == 4 ? PyFloat_Pack4(d, b->p + b->len, 1) : PyFloat_Pack8(d, b->p + b->len, 1);
        if (packed < 0) return -1;
        b->len += size;
        return 0;
    }
    case K_BYTES:
        return write_buffer(value, b, -1);
    case K_STRING: {
        if (!PyUnicode_Check(value)) return type_error("str", value);
        Py_ssize_t size;
        const char *utf8 = PyUnicode_AsUTF8AndSize(value, &size);
        if (utf8 == NULL) return -1;
        return put_run(b, utf8, size);
    }
    case K_RECORD:
        return write_record(node, value, b, 0, NULL);
    case K_ENUM: {
        PyObject *at = PyDict_GetItemWithError(node->index, value);
        if (at == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, value);
            return -1;
        }
        return put_long(b, (int64_t)PyLong_AsSsize_t(at));
    }
    case K_FIXED:
        return write_buffer(value, b, node->n);
    case K_ARRAY:
    case K_MAP:
        return write_blocks(node, value, b);
    case K_UNION:
        if (value == Py_None) return put_byte(b, (unsigned char)(2 * node->null_index));
        if (put_byte(b, (unsigned char)(2 * (1 - node->null_index))) < 0) return -1;
        return write_value(node->children[0], value, b);
    }
    PyErr_SetString(PyExc_SystemError, "unknown node kind");
    return -1;
}

/* -- the Writer type -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Node *root;
    Memo *memos;  /* per field of the top record; bytes == (PyObject *)-1 for fields not memoised */
} Writer;

static void Writer_dealloc(Writer *self) {
    if (self->memos != NULL) {
        for (Py_ssize_t i = 0; i < self->root->n; i++) {
            Py_XDECREF(self->memos[i].object);
            if (self->memos[i].bytes != (PyObject *)-1) Py_XDECREF(self->memos[i].bytes);
        }
        PyMem_Free(self->memos);
    }
    free_node(self->root);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Writer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *tree, *memo = NULL;
    static char *keywords[] = {"tree", "memo", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O!", keywords, &tree, &PyTuple_Type, &memo)) return NULL;
    Node *root = build_node(tree, 0);
    if (root == NULL) return NULL;
    Writer *self = (Writer *)type->tp_alloc(type, 0);
    if (self == NULL) {
        free_node(root);
        return NULL;
    }
    self->root = root;
    if (memo != NULL && PyTuple_GET_SIZE(memo)) {
        if (root->kind != K_RECORD) {
            Py_DECREF(self);
            PyErr_SetString(PyExc_ValueError, "memo needs a record at the top");
            return NULL;
        }
        self->memos = PyMem_Calloc(root->n ? root->n : 1, sizeof(Memo));
        if (self->memos == NULL) {
            Py_DECREF(self);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < root->n; i++) self->memos[i].bytes = (PyObject *)-1;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(memo); j++) {
            Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(memo, j));
            if (i < 0 || i >= root->n) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "memo: not a field index");
                Py_DECREF(self);
                return NULL;
            }
            self->memos[i].bytes = NULL;
        }
    }
    return (PyObject *)self;
}

static PyObject *Writer_call(Writer *self, PyObject *args, PyObject *kwargs) {
    PyObject *value, *out;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "encode(record, out) takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!", &value, &PyByteArray_Type, &out)) return NULL;
    Buf b = {NULL, 0, 0};
    int failed;
    if (self->root->kind == K_RECORD) failed = write_record(self->root, value, &b, 0, self->memos);
    else failed = write_value(self->root, value, &b);
    if (!failed && b.len) {
        Py_ssize_t start = PyByteArray_GET_SIZE(out);
        failed = PyByteArray_Resize(out, start + b.len) < 0;
        if (!failed) memcpy(PyByteArray_AS_STRING(out) + start, b.p, (size_t)b.len);
    }
    PyMem_Free(b.p);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trafficreel.schemas._cavro.Writer",
    .tp_doc = PyDoc_STR("Writer(tree, memo=()): encode(record, out) appends to the bytearray out"),
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Writer_new,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_call = (ternaryfunc)Writer_call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "trafficreel.schemas._cavro",
    .m_doc = "The Avro binary decoder of trafficreel.schemas._decoder, in C.",
    .m_size = -1,
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
