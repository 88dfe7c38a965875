/* The counting core of evalsvc.scorers.fast_rouge, in C: n-gram hits, the LCS and the union-LCS hits of rouge-score 0.1.2.
 *
 * hits(ref, pred, ns, lcs, lsum, max_cells) takes two texts, either both as ASCII str (tokenized here as
 * rouge-score does without a stemmer: runs of [a-z0-9] after lower-casing, sentences split on newlines) or
 * both as lists of sentences, each a list of str tokens. It returns a tuple:
 *   the number of tokens of ref and of pred;
 *   for each n in ns, the clipped n-gram matches, sum over g of min(count_ref(g), count_pred(g));
 *   the LCS length of the two token sequences (rouge-score's _lcs_table), or -1 if lcs is false;
 *   the hits of rouge-score's _summary_level_lcs, or -1 if lsum is false;
 * or None when len(ref) * len(pred) > max_cells (at most 2**22: the shorter text then has at most 2048 tokens,
 * so the 16-bit cells of the full LCS tables cannot overflow).
 * Tokens are compared as strings (interned into small ints). The LCS tables are rouge-score's own recurrence
 * and its _backtrack_norec walk, so rougeLsum takes the same LCS as rouge-score does. Lists and tokens must be
 * exactly list and str: a subclass could run Python code (__hash__, __eq__) that resizes a list mid-read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    Py_ssize_t n;       /* tokens */
    Py_ssize_t nsent;   /* sentences */
    int32_t *ids;       /* token ids, n of them */
    Py_ssize_t *start;  /* sentence k is ids[start[k] .. start[k + 1]) */
} text_t;

static void text_free(text_t *t) {
    PyMem_Free(t->ids);
    PyMem_Free(t->start);
    t->ids = NULL;
    t->start = NULL;
}

/* Room for n tokens in nsent sentences; on failure nothing stays allocated and MemoryError is set. */
static int text_alloc(text_t *t, Py_ssize_t n, Py_ssize_t nsent) {
    t->ids = PyMem_Malloc(sizeof(int32_t) * (n ? n : 1));
    t->start = PyMem_Malloc(sizeof(Py_ssize_t) * (nsent + 1));
    if (!t->ids || !t->start) {
        text_free(t);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Fills t from a list of lists of str, giving each distinct token the next id in vocab. */
static int text_read(PyObject *sents, PyObject *vocab, text_t *t) {
    memset(t, 0, sizeof(*t));
    if (!PyList_CheckExact(sents)) {
        PyErr_SetString(PyExc_TypeError, "sentences must be a list of lists of str");
        return -1;
    }
    Py_ssize_t ns = PyList_GET_SIZE(sents), n = 0;
    for (Py_ssize_t k = 0; k < ns; k++) {
        PyObject *s = PyList_GET_ITEM(sents, k);
        if (!PyList_CheckExact(s)) {
            PyErr_SetString(PyExc_TypeError, "sentences must be a list of lists of str");
            return -1;
        }
        n += PyList_GET_SIZE(s);
    }
    if (text_alloc(t, n, ns) < 0)
        return -1;
    t->n = n;
    t->nsent = ns;
    Py_ssize_t p = 0;
    for (Py_ssize_t k = 0; k < ns; k++) {
        PyObject *s = PyList_GET_ITEM(sents, k);
        t->start[k] = p;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(s); i++) {
            PyObject *tok = PyList_GET_ITEM(s, i);
            if (!PyUnicode_CheckExact(tok)) {
                PyErr_SetString(PyExc_TypeError, "tokens must be str");
                text_free(t);
                return -1;
            }
            PyObject *id = PyDict_GetItemWithError(vocab, tok);
            if (id) {
                t->ids[p++] = (int32_t)PyLong_AsLong(id);
                continue;
            }
            if (PyErr_Occurred()) {
                text_free(t);
                return -1;
            }
            Py_ssize_t next = PyDict_GET_SIZE(vocab);
            id = PyLong_FromSsize_t(next);
            if (!id || PyDict_SetItem(vocab, tok, id) < 0) {
                Py_XDECREF(id);
                text_free(t);
                return -1;
            }
            Py_DECREF(id);
            t->ids[p++] = (int32_t)next;
        }
    }
    t->start[ns] = p;
    return 0;
}

static uint64_t gram_hash(const int32_t *g, int n) {
    uint64_t h = 1469598103934665603ULL;
    for (int k = 0; k < n; k++) {
        h ^= (uint32_t)g[k];
        h *= 1099511628211ULL;
        h ^= h >> 29;
    }
    return h;
}

/* Clipped n-gram matches: each n-gram of ref goes in an open-addressing table with its count; each n-gram of
 * pred that finds a count above 0 is a hit and takes one. Returns -1 on memory failure. */
static long long ngram_hits(const text_t *ref, const text_t *pred, int n) {
    Py_ssize_t nr = ref->n - n + 1, np = pred->n - n + 1;
    if (nr <= 0 || np <= 0)
        return 0;
    size_t cap = 16;
    while (cap < (size_t)nr * 2)
        cap <<= 1;
    Py_ssize_t *slot = PyMem_Malloc(sizeof(Py_ssize_t) * cap); /* start of the gram in ref, or -1 */
    Py_ssize_t *count = PyMem_Malloc(sizeof(Py_ssize_t) * cap);
    if (!slot || !count) {
        PyMem_Free(slot);
        PyMem_Free(count);
        return -1;
    }
    for (size_t k = 0; k < cap; k++)
        slot[k] = -1;
    for (Py_ssize_t i = 0; i < nr; i++) {
        const int32_t *g = ref->ids + i;
        size_t h = gram_hash(g, n) & (cap - 1);
        while (slot[h] >= 0 && memcmp(ref->ids + slot[h], g, sizeof(int32_t) * n))
            h = (h + 1) & (cap - 1);
        if (slot[h] < 0) {
            slot[h] = i;
            count[h] = 0;
        }
        count[h]++;
    }
    long long hits = 0;
    for (Py_ssize_t i = 0; i < np; i++) {
        const int32_t *g = pred->ids + i;
        size_t h = gram_hash(g, n) & (cap - 1);
        while (slot[h] >= 0 && memcmp(ref->ids + slot[h], g, sizeof(int32_t) * n))
            h = (h + 1) & (cap - 1);
        if (slot[h] >= 0 && count[h] > 0) {
            count[h]--;
            hits++;
        }
    }
    PyMem_Free(slot);
    PyMem_Free(count);
    return hits;
}

/* rouge-score's _lcs_table(r, c) into t, (nr + 1) x (nc + 1) cells, row-major. */
static void lcs_table(const int32_t *r, Py_ssize_t nr, const int32_t *c, Py_ssize_t nc, uint16_t *t) {
    Py_ssize_t w = nc + 1;
    memset(t, 0, sizeof(uint16_t) * w);
    for (Py_ssize_t i = 1; i <= nr; i++) {
        uint16_t *row = t + i * w, *up = row - w;
        row[0] = 0;
        int32_t ri = r[i - 1];
        for (Py_ssize_t j = 1; j <= nc; j++) {
            if (ri == c[j - 1])
                row[j] = up[j - 1] + 1;
            else
                row[j] = up[j] > row[j - 1] ? up[j] : row[j - 1];
        }
    }
}

/* LCS length with two rows of the same recurrence. */
static long long lcs_len(const text_t *ref, const text_t *pred) {
    Py_ssize_t nc = pred->n;
    uint16_t *up = PyMem_Calloc(2 * (nc + 1), sizeof(uint16_t));
    if (!up)
        return -1;
    uint16_t *row = up + nc + 1;
    for (Py_ssize_t i = 0; i < ref->n; i++) {
        int32_t ri = ref->ids[i];
        row[0] = 0;
        for (Py_ssize_t j = 1; j <= nc; j++) {
            if (ri == pred->ids[j - 1])
                row[j] = up[j - 1] + 1;
            else
                row[j] = up[j] > row[j - 1] ? up[j] : row[j - 1];
        }
        uint16_t *tmp = up;
        up = row;
        row = tmp;
    }
    long long out = up[nc];
    PyMem_Free(up < row ? up : row);
    return out;
}

/* rouge-score's _summary_level_lcs hits: for each reference sentence, the union over candidate sentences of the
 * reference positions on the LCS that _backtrack_norec walks; each token there is a hit while both texts still
 * have an unmatched occurrence of it. */
static long long lsum_hits(const text_t *ref, const text_t *pred, Py_ssize_t nvocab) {
    Py_ssize_t longest_r = 0, longest_c = 0;
    for (Py_ssize_t k = 0; k < ref->nsent; k++)
        if (ref->start[k + 1] - ref->start[k] > longest_r)
            longest_r = ref->start[k + 1] - ref->start[k];
    for (Py_ssize_t k = 0; k < pred->nsent; k++)
        if (pred->start[k + 1] - pred->start[k] > longest_c)
            longest_c = pred->start[k + 1] - pred->start[k];
    uint16_t *t = PyMem_Malloc(sizeof(uint16_t) * (longest_r + 1) * (longest_c + 1));
    char *used = PyMem_Malloc(longest_r + 1);
    Py_ssize_t *cnt_r = PyMem_Calloc(nvocab + 1, sizeof(Py_ssize_t));
    Py_ssize_t *cnt_c = PyMem_Calloc(nvocab + 1, sizeof(Py_ssize_t));
    long long hits = -1;
    if (!t || !used || !cnt_r || !cnt_c)
        goto done;
    for (Py_ssize_t i = 0; i < ref->n; i++)
        cnt_r[ref->ids[i]]++;
    for (Py_ssize_t i = 0; i < pred->n; i++)
        cnt_c[pred->ids[i]]++;
    hits = 0;
    for (Py_ssize_t k = 0; k < ref->nsent; k++) {
        const int32_t *r = ref->ids + ref->start[k];
        Py_ssize_t nr = ref->start[k + 1] - ref->start[k];
        memset(used, 0, nr);
        for (Py_ssize_t q = 0; q < pred->nsent; q++) {
            const int32_t *c = pred->ids + pred->start[q];
            Py_ssize_t nc = pred->start[q + 1] - pred->start[q], w = nc + 1;
            lcs_table(r, nr, c, nc, t);
            Py_ssize_t i = nr, j = nc;
            while (i > 0 && j > 0) {
                if (r[i - 1] == c[j - 1]) {
                    used[i - 1] = 1;
                    i--;
                    j--;
                } else if (t[i * w + j - 1] > t[(i - 1) * w + j]) {
                    j--;
                } else {
                    i--;
                }
            }
        }
        for (Py_ssize_t i = 0; i < nr; i++) {
            if (used[i] && cnt_c[r[i]] > 0 && cnt_r[r[i]] > 0) {
                hits++;
                cnt_c[r[i]]--;
                cnt_r[r[i]]--;
            }
        }
    }
done:
    PyMem_Free(t);
    PyMem_Free(used);
    PyMem_Free(cnt_r);
    PyMem_Free(cnt_c);
    return hits;
}

/* Token interning for texts given as str: tokens are (offset, length) slices of one lower-cased buffer. */
typedef struct {
    const char *buf;
    Py_ssize_t *off, *len; /* per id */
    int32_t *slot;         /* open addressing: id + 1, or 0 */
    size_t cap;
    Py_ssize_t n;
} vocab_t;

static int32_t vocab_id(vocab_t *v, Py_ssize_t off, Py_ssize_t len) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t k = 0; k < len; k++) {
        h ^= (unsigned char)v->buf[off + k];
        h *= 1099511628211ULL;
    }
    size_t i = (size_t)(h ^ (h >> 32)) & (v->cap - 1);
    while (v->slot[i]) {
        int32_t id = v->slot[i] - 1;
        if (v->len[id] == len && !memcmp(v->buf + v->off[id], v->buf + off, len))
            return id;
        i = (i + 1) & (v->cap - 1);
    }
    v->off[v->n] = off;
    v->len[v->n] = len;
    v->slot[i] = (int32_t)(++v->n);
    return (int32_t)(v->n - 1);
}

/* rouge-score's tokens of an ASCII text: runs of [a-z0-9] after lower-casing; sentences split on newlines
 * (rougeLsum), the ones without tokens left out. buf[base ..] holds the lower-cased text. */
static int text_scan(const char *src, Py_ssize_t size, Py_ssize_t base, char *buf, vocab_t *v, text_t *t) {
    memset(t, 0, sizeof(*t));
    Py_ssize_t words = 0, lines = 1;
    for (Py_ssize_t k = 0; k < size; k++) {
        char ch = src[k];
        if (ch >= 'A' && ch <= 'Z')
            ch += 32;
        buf[base + k] = ch;
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (alnum && (k == 0 || !((buf[base + k - 1] >= 'a' && buf[base + k - 1] <= 'z') ||
                                  (buf[base + k - 1] >= '0' && buf[base + k - 1] <= '9'))))
            words++;
        lines += ch == '\n';
    }
    if (text_alloc(t, words, lines) < 0)
        return -1;
    Py_ssize_t p = 0, ns = 0, k = 0;
    t->start[0] = 0;
    while (k < size) {
        char ch = buf[base + k];
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) {
            Py_ssize_t s = k;
            while (k < size && ((buf[base + k] >= 'a' && buf[base + k] <= 'z') || (buf[base + k] >= '0' && buf[base + k] <= '9')))
                k++;
            t->ids[p++] = vocab_id(v, base + s, k - s);
            continue;
        }
        if (ch == '\n' && p > t->start[ns])
            t->start[++ns] = p;
        k++;
    }
    if (p > t->start[ns])
        t->start[++ns] = p;
    t->n = p;
    t->nsent = ns;
    return 0;
}

/* Reads both texts: two ASCII str (tokenized here) or two lists of sentences (token lists). Returns the
 * number of distinct tokens, or -1 with an exception set. On success both texts are to be freed. */
static Py_ssize_t texts_read(PyObject *a, PyObject *b, text_t *ta, text_t *tb, char **bufp) {
    *bufp = NULL;
    if (PyUnicode_Check(a) && PyUnicode_Check(b)) {
        if (!PyUnicode_IS_ASCII(a) || !PyUnicode_IS_ASCII(b)) {
            PyErr_SetString(PyExc_ValueError, "texts given as str must be ASCII");
            return -1;
        }
        Py_ssize_t na = PyUnicode_GET_LENGTH(a), nb = PyUnicode_GET_LENGTH(b), words = (na + nb) / 2 + 1;
        vocab_t v = {0};
        v.cap = 16;
        while (v.cap < (size_t)words * 2)
            v.cap <<= 1;
        char *buf = PyMem_Malloc(na + nb + 1);
        v.buf = buf;
        v.off = PyMem_Malloc(sizeof(Py_ssize_t) * words);
        v.len = PyMem_Malloc(sizeof(Py_ssize_t) * words);
        v.slot = PyMem_Calloc(v.cap, sizeof(int32_t));
        Py_ssize_t out = -1;
        if (!buf || !v.off || !v.len || !v.slot) {
            PyErr_NoMemory();
        } else if (text_scan(PyUnicode_DATA(a), na, 0, buf, &v, ta) == 0) {
            if (text_scan(PyUnicode_DATA(b), nb, na, buf, &v, tb) == 0)
                out = v.n;
            else
                text_free(ta);
        }
        PyMem_Free(v.off);
        PyMem_Free(v.len);
        PyMem_Free(v.slot);
        if (out < 0)
            PyMem_Free(buf);
        else
            *bufp = buf;
        return out;
    }
    PyObject *vocab = PyDict_New();
    if (!vocab)
        return -1;
    Py_ssize_t out = -1;
    if (text_read(a, vocab, ta) == 0) {
        if (text_read(b, vocab, tb) == 0)
            out = PyDict_GET_SIZE(vocab);
        else
            text_free(ta);
    }
    Py_DECREF(vocab);
    return out;
}

static PyObject *hits(PyObject *self, PyObject *args) {
    PyObject *ref_in, *pred_in, *ns;
    int want_lcs, want_lsum;
    Py_ssize_t max_cells;
    if (!PyArg_ParseTuple(args, "OOO!ppn:hits", &ref_in, &pred_in, &PyTuple_Type, &ns, &want_lcs, &want_lsum, &max_cells))
        return NULL;
    text_t ref, pred;
    char *buf;
    Py_ssize_t nvocab = texts_read(ref_in, pred_in, &ref, &pred, &buf);
    if (nvocab < 0)
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t nn = PyTuple_GET_SIZE(ns);
    if (max_cells > (1 << 22)) {
        PyErr_SetString(PyExc_ValueError, "max_cells must be at most 2**22 (16-bit LCS tables)");
        goto done;
    }
    if ((double)ref.n * (double)pred.n > (double)max_cells) {
        out = Py_None; /* too long for 16-bit full tables: the caller counts another way */
        Py_INCREF(out);
        goto done;
    }
    out = PyTuple_New(nn + 4);
    if (!out)
        goto done;
    for (int k = 0; k < 2; k++) {
        PyObject *item = PyLong_FromSsize_t(k ? pred.n : ref.n);
        if (!item) {
            Py_CLEAR(out);
            goto done;
        }
        PyTuple_SET_ITEM(out, k, item);
    }
    for (Py_ssize_t k = 0; k < nn + 2; k++) {
        long long v;
        if (k < nn) {
            long n = PyLong_AsLong(PyTuple_GET_ITEM(ns, k));
            if (n < 1 || n > 9) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "n must be 1 to 9");
                Py_CLEAR(out);
                goto done;
            }
            v = ngram_hits(&ref, &pred, (int)n);
        } else if (k == nn) {
            v = want_lcs ? (ref.n && pred.n ? lcs_len(&ref, &pred) : 0) : -2;
        } else {
            v = want_lsum ? lsum_hits(&ref, &pred, nvocab) : -2;
        }
        if (v == -1) {
            PyErr_NoMemory();
            Py_CLEAR(out);
            goto done;
        }
        PyObject *item = PyLong_FromLongLong(v < 0 ? -1 : v);
        if (!item) {
            Py_CLEAR(out);
            goto done;
        }
        PyTuple_SET_ITEM(out, k + 2, item);
    }
done:
    text_free(&ref);
    text_free(&pred);
    PyMem_Free(buf);
    return out;
}

static PyMethodDef methods[] = {
    {"hits", hits, METH_VARARGS,
     "hits(ref, pred, ns, lcs, lsum, max_cells) -> (ref tokens, pred tokens, n-gram hits for each n in ns..., "
     "LCS length or -1, union-LCS hits or -1), or None when len(ref) * len(pred) > max_cells"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_rouge_core", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__rouge_core(void) { return PyModule_Create(&module); }
