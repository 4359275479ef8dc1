// Package file is the config source for file mode: every *.yaml/*.yml under a
// directory, decoded strictly by the shared resources decoder, watched with
// fsnotify and turned into resources.Resources snapshots.
//
// A file is applied as a whole. When a file stops parsing, the objects of its
// last good version stay in force and the file's errors are reported in the
// snapshot, so a typo in one file never takes down what it configured; a
// deleted file's objects do go away.
//
// A change costs what it changed: only documents whose bytes are new are
// decoded, and the previous snapshot is patched for the objects that changed
// rather than rebuilt.
package file

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/ambitmesh/ambit/api/v1alpha1"
	"github.com/ambitmesh/ambit/internal/control/resources"
)

// DefaultDebounce is how long the directory must be quiet before a change is
// applied: long enough to take an editor's save or a `cp -r` as one change,
// short enough that proxies see it at once.
const DefaultDebounce = 100 * time.Millisecond

// rootRetry is how often a vanished config directory is looked for.
var rootRetry = time.Second

// Options configure a Source.
type Options struct {
	// Debounce is how long no file event may arrive before changes are
	// applied. A steady stream of events is applied at least every
	// 10 × Debounce. Zero means DefaultDebounce.
	Debounce time.Duration
	// Logger receives watch problems; nil discards them. Configuration
	// errors are not logged here: they are in each snapshot's Errors.
	Logger *slog.Logger
}

// Source reads a directory (or a single file) of Kubernetes YAML.
type Source struct {
	dir  string
	opts Options
	log  *slog.Logger
}

// New returns a Source for dir. It does no I/O.
func New(dir string, opts Options) *Source {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{dir: dir, opts: opts, log: log}
}

// Load reads and decodes everything once, for one-shot use such as
// `ambit translate`. Problems with individual files are in the result's
// Errors; the error is for a directory that cannot be read at all.
func (s *Source) Load() (*resources.Resources, error) {
	st := newState(s.dir)
	if _, err := st.rescan(); err != nil {
		return nil, err
	}
	return st.snapshot(), nil
}

// Run emits the initial snapshot, then a new one after each debounced change
// that alters what the files say, until ctx is done. emit is called from
// Run's goroutine, one call at a time; snapshots must not be modified. Run
// returns nil when ctx is cancelled, and an error when the directory cannot
// be read at the start or the watcher fails.
func (s *Source) Run(ctx context.Context, emit func(*resources.Resources)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("file source: start watching %s: %w", s.dir, err)
	}
	defer w.Close()

	st := newState(s.dir)
	st.watcher = w
	newDirs, err := st.rescan()
	if err != nil {
		return err
	}
	emit(st.snapshot())

	maxDelay := 10 * s.opts.Debounce
	timer := time.NewTimer(0)
	<-timer.C
	var (
		pending    bool
		firstEvent time.Time
	)
	// arm schedules a rescan once the directory has been quiet for the
	// debounce, but never later than maxDelay after the first event.
	arm := func() {
		now := time.Now()
		if !pending {
			pending, firstEvent = true, now
		}
		delay := min(s.opts.Debounce, firstEvent.Add(maxDelay).Sub(now))
		timer.Reset(max(delay, 0))
	}
	if newDirs {
		// Files created between the walk and adding the watches on their
		// directories raised no event; look once more.
		arm()
	}
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("file source: watcher for %s closed unexpectedly", s.dir)
			}
			// Any event may matter: a hidden directory swap is how Kubernetes
			// updates a mounted ConfigMap, a removed directory takes its files
			// along. A rescan that finds nothing new emits nothing.
			arm()
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("file source: watcher for %s closed unexpectedly", s.dir)
			}
			// Typically an event queue overflow: events were lost, so rescan.
			s.log.Warn("file watch error; rescanning", "dir", s.dir, "err", err)
			arm()
		case <-timer.C:
			pending = false
			changed, newDirs, err := st.rescanWatched()
			switch {
			case err != nil:
				// The directory itself is gone, and its watch with it: poll
				// until it is back.
				if changed {
					s.log.Error("cannot read config directory; keeping the last configuration", "dir", s.dir, "err", err)
				}
				timer.Reset(rootRetry)
			case newDirs:
				arm()
			}
			if changed {
				emit(st.snapshot())
			}
		}
	}
}

// docEntry is what one YAML document decoded to, shared by every version
// of its file (and every position in it) that has the same document bytes.
type docEntry struct {
	objs  []resources.Object
	keys  []objKey
	specs [][sha256.Size]byte // spec hash of each object
	// shared says objs[i] was handed out in a snapshot and must not be
	// modified any more; until then its generation is set in place.
	shared []bool
}

// fileObj is one object of a file version: which decoded object, and where.
type fileObj struct {
	entry *docEntry
	i     int
	doc   int // 1-based document number in the file
}

func (f fileObj) key() objKey              { return f.entry.keys[f.i] }
func (f fileObj) object() resources.Object { return f.entry.objs[f.i] }

// fileState is what the source knows about one file.
type fileState struct {
	// data is the content last read: comparing it is exact and several
	// times cheaper than hashing every file on every rescan.
	data []byte
	read bool // data is valid
	// stat identifies the version data was read from; a rescan that stats
	// the file the same skips reading it (most rescans change one file of
	// many). Zero when unknown or too recent to trust (see trustedStat).
	stat fileStat
	// good are the objects of the last version that decoded without errors;
	// nil if there never was one.
	good     []fileObj
	everGood bool
	// docs are the documents of the current version that decoded without
	// errors, by hash of their bytes: a new version decodes only the
	// documents that are not here.
	docs map[[sha256.Size]byte]*docEntry
	// errs are the problems of the current version; empty when good is current.
	errs []resources.SourceError
}

type objKey struct {
	gk       schema.GroupKind
	ns, name string
}

var meshConfigKind = schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: "MeshConfig"}

type generation struct {
	gen  int64
	spec [sha256.Size]byte
}

// owner is a file object with the key of an objKey; the first owner in
// path, then document order is the one in force.
type owner struct {
	path string
	obj  fileObj
}

// compareOwners orders owners by path, then position in the file.
func compareOwners(a, b owner) int {
	return cmp.Or(strings.Compare(a.path, b.path), cmp.Compare(a.obj.doc, b.obj.doc), cmp.Compare(a.obj.i, b.obj.i))
}

// winner is the object of a key in the last snapshot.
type winner struct {
	obj  resources.Object
	path string
	doc  int
}

type state struct {
	root    string
	watcher *fsnotify.Watcher // nil for Load
	watched map[string]bool
	files   map[string]*fileState
	walkErr []resources.SourceError
	gens    map[objKey]generation
	// lastChanged says whether the last rescan changed anything a snapshot shows.
	lastChanged bool

	// The last snapshot, and what it was built from, so that the next one
	// only looks at the files whose good objects changed since (dirty).
	prev       *resources.Resources
	dirty      map[string]bool
	registered map[string][]fileObj // each path's objects in owners
	owners     map[objKey][]owner   // sorted by path, then position
	winners    map[objKey]winner
	dupErrs    map[objKey][]resources.SourceError
	meshKeys   map[objKey]bool // MeshConfig keys with a winner

	meshErrs []resources.SourceError

	decodes int // documents decoded so far, for tests
	reads   int // files read so far, for tests
}

func newState(root string) *state {
	return &state{
		root:    root,
		watched: map[string]bool{},
		files:   map[string]*fileState{},
		gens:    map[objKey]generation{},

		dirty:      map[string]bool{},
		registered: map[string][]fileObj{},
		owners:     map[objKey][]owner{},
		winners:    map[objKey]winner{},
		dupErrs:    map[objKey][]resources.SourceError{},
		meshKeys:   map[objKey]bool{},
	}
}

// rescanWatched is rescan for the running source: a directory that vanished
// keeps the last configuration instead of dropping every object, and says so.
func (st *state) rescanWatched() (changed, newDirs bool, err error) {
	newDirs, err = st.rescan()
	if err != nil {
		e := []resources.SourceError{{Source: st.root, Message: err.Error() + "; the last configuration read from it stays in force"}}
		changed = !equalErrors(e, st.walkErr)
		st.walkErr = e
		// The kernel dropped the watches with the directory; forget them so
		// that they are added again when it comes back.
		for d := range st.watched {
			_ = st.watcher.Remove(d)
		}
		clear(st.watched)
		return changed, false, err
	}
	return st.lastChanged, newDirs, nil
}

// rescan walks the tree and rereads every file, recording what changed in
// st.lastChanged. It reports whether new directories were put under watch.
func (st *state) rescan() (newDirs bool, err error) {
	st.lastChanged = false
	info, err := os.Stat(st.root)
	if err != nil {
		return false, fmt.Errorf("file source: config directory %s: %w; create it or point the config directory elsewhere", st.root, err)
	}

	var (
		paths   []string
		dirs    []string
		walkErr []resources.SourceError
		// Files under a directory that could not be read keep their state:
		// unreadable is not the same as deleted.
		unreadable []string
	)
	if !info.IsDir() {
		paths = []string{st.root}
		dirs = []string{filepath.Dir(st.root)}
	} else {
		walkRoot := st.root
		if li, err := os.Lstat(st.root); err == nil && li.Mode()&fs.ModeSymlink != 0 {
			// WalkDir does not descend into a symlinked root; a trailing
			// separator makes it resolve the link.
			walkRoot += string(filepath.Separator)
		}
		err := filepath.WalkDir(walkRoot, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if path == walkRoot {
					return err
				}
				walkErr = append(walkErr, resources.SourceError{Source: path, Message: fmt.Sprintf("cannot read: %v; fix its permissions (files in it keep their last configuration)", unwrapPath(err))})
				unreadable = append(unreadable, path)
				if d != nil && d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if path != walkRoot && skipName(d.Name()) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			switch {
			case d.IsDir():
				dirs = append(dirs, path)
			case d.Type().IsRegular():
				if isYAML(d.Name()) {
					paths = append(paths, path)
				}
			case d.Type()&fs.ModeSymlink != 0:
				// Kubernetes mounts ConfigMap keys as symlinks; follow links to
				// files but not to directories, which could form cycles.
				if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && isYAML(d.Name()) {
					paths = append(paths, path)
				}
			}
			return nil
		})
		if err != nil {
			return false, fmt.Errorf("file source: config directory %s: %w", st.root, err)
		}
	}
	if !equalErrors(walkErr, st.walkErr) {
		st.lastChanged = true
	}
	st.walkErr = walkErr

	newDirs = st.syncWatches(dirs)

	present := make(map[string]bool, len(paths))
	for _, p := range paths {
		present[p] = true
		if st.update(p) {
			st.lastChanged = true
		}
	}
	for p := range st.files {
		if present[p] || under(p, unreadable) {
			continue
		}
		delete(st.files, p)
		st.dirty[p] = true
		st.lastChanged = true
	}
	return newDirs, nil
}

// update rereads one file and reports whether anything about it changed.
func (st *state) update(path string) bool {
	fst := st.files[path]
	if fst == nil {
		fst = &fileState{}
		st.files[path] = fst
	}
	stat, statOK := statFile(path)
	if statOK && fst.read && stat == fst.stat {
		return false
	}
	readAt := time.Now()
	st.reads++
	data, err := os.ReadFile(path)
	if err != nil {
		fst.stat = fileStat{}
		msg := fmt.Sprintf("cannot read file: %v; fix the file or its permissions", unwrapPath(err))
		if fst.everGood {
			msg += " (its last good version stays in force)"
		}
		e := []resources.SourceError{{Source: path, Message: msg}}
		changed := !equalErrors(e, fst.errs)
		fst.errs, fst.read = e, false
		return changed
	}
	fst.stat = fileStat{}
	if statOK && trustedStat(stat, readAt) {
		fst.stat = stat
	}
	if fst.read && bytes.Equal(data, fst.data) {
		return false
	}
	fst.data, fst.read = data, true

	objs, errs := st.decode(fst, path, data)
	if len(errs) == 0 {
		fst.good, fst.everGood, fst.errs = objs, true, nil
		st.dirty[path] = true
		return true
	}
	note := "file not applied until its errors are fixed"
	if fst.everGood {
		note += fmt.Sprintf("; its last good version (%d objects) stays in force meanwhile", len(fst.good))
	}
	errs = append(errs, resources.SourceError{Source: path, Message: note})
	changed := !equalErrors(errs, fst.errs)
	fst.errs = errs
	return changed
}

// decode is resources.Decode with the file's documents cache: a document
// whose bytes the previous version had as well reuses what it decoded to,
// wherever it moved. Documents with errors are not cached (their messages
// hold document and line numbers, and they are rare): they are decoded again.
func (st *state) decode(fst *fileState, path string, data []byte) ([]fileObj, []resources.SourceError) {
	docs, splitErrs := resources.SplitDocuments(path, data)
	var (
		objs  []fileObj
		errs  []resources.SourceError
		cache = make(map[[sha256.Size]byte]*docEntry, len(docs))
	)
	for _, d := range docs {
		h := sha256.Sum256(d.Data)
		e := cache[h]
		if e == nil {
			e = fst.docs[h]
		}
		if e == nil {
			st.decodes++
			decoded, derrs := resources.DecodeDocument(path, d)
			if len(derrs) > 0 {
				errs = append(errs, derrs...)
				continue
			}
			e = &docEntry{
				objs:   make([]resources.Object, len(decoded)),
				keys:   make([]objKey, len(decoded)),
				specs:  make([][sha256.Size]byte, len(decoded)),
				shared: make([]bool, len(decoded)),
			}
			for i, o := range decoded {
				e.objs[i] = o.Object
				e.keys[i] = keyOf(o.Object)
				e.specs[i] = specHash(o.Object)
			}
		}
		cache[h] = e
		for i := range e.objs {
			objs = append(objs, fileObj{entry: e, i: i, doc: d.Number})
		}
	}
	fst.docs = cache
	return objs, append(errs, splitErrs...)
}

func keyOf(o resources.Object) objKey {
	return objKey{o.GetObjectKind().GroupVersionKind().GroupKind(), o.GetNamespace(), o.GetName()}
}

// snapshot returns the configuration now in force: of several objects with
// the same kind and name, the first in path, then document order wins and
// owns the generation. It patches the previous snapshot with the keys of the
// files that changed since, so an edit costs what it changed, not the mesh.
func (st *state) snapshot() *resources.Resources {
	affected := map[objKey]bool{}
	for p := range st.dirty {
		old := st.registered[p]
		var good []fileObj
		if fst := st.files[p]; fst != nil {
			good = fst.good
		}
		gone, added := old, good
		if len(old) == len(good) {
			// Usually one document was edited: only the positions that
			// differ change owners; the rest are the same objects.
			gone, added = nil, nil
			for i := range old {
				if old[i] != good[i] {
					gone = append(gone, old[i])
					added = append(added, good[i])
				}
			}
		}
		for _, o := range gone {
			k := o.key()
			affected[k] = true
			st.owners[k] = slices.DeleteFunc(st.owners[k], func(w owner) bool { return w.path == p && w.obj == o })
		}
		for _, o := range added {
			k := o.key()
			affected[k] = true
			w := owner{path: p, obj: o}
			ws := st.owners[k]
			i, _ := slices.BinarySearchFunc(ws, w, compareOwners)
			st.owners[k] = slices.Insert(ws, i, w)
		}
		if good == nil {
			delete(st.registered, p)
		} else {
			st.registered[p] = good
		}
	}
	clear(st.dirty)

	var put, remove []resources.Object
	meshChanged := false
	for k := range affected {
		if k.gk == meshConfigKind {
			meshChanged = true
		}
		ws := st.owners[k]
		prev, had := st.winners[k]
		if len(ws) == 0 {
			// Gone: a later object of that name starts again at 1, as after
			// a delete and create in the API server.
			delete(st.owners, k)
			delete(st.gens, k)
			delete(st.winners, k)
			delete(st.dupErrs, k)
			delete(st.meshKeys, k)
			if had && k.gk != meshConfigKind {
				remove = append(remove, prev.obj)
			}
			continue
		}
		first := ws[0]
		o := st.assignGeneration(k, first.obj)
		st.winners[k] = winner{obj: o, path: first.path, doc: first.obj.doc}
		if k.gk == meshConfigKind {
			st.meshKeys[k] = true
		} else if !had || prev.obj != o {
			put = append(put, o)
		}
		if len(ws) == 1 {
			delete(st.dupErrs, k)
			continue
		}
		firstD := resources.Decoded{Object: o, Source: first.path, Document: first.obj.doc}
		errs := make([]resources.SourceError, 0, len(ws)-1)
		for _, w := range ws[1:] {
			errs = append(errs, resources.DuplicateError(resources.Decoded{Object: w.obj.object(), Source: w.path, Document: w.obj.doc}, firstD))
		}
		st.dupErrs[k] = errs
	}

	prev := st.prev
	if prev == nil {
		prev = &resources.Resources{}
	}
	r, ok := prev.Update(put, remove)
	if !ok {
		// Unreachable: Update has a slice for every kind the decoder
		// returns (TestUpdateEveryKind). Stay correct for the objects anyway.
		r = st.rebuild()
	}
	r.MeshConfig = prev.MeshConfig
	if meshChanged || st.prev == nil {
		r.MeshConfig, st.meshErrs = st.meshConfig()
	}

	r.Errors = append([]resources.SourceError(nil), st.walkErr...)
	for _, fst := range st.files {
		r.Errors = append(r.Errors, fst.errs...)
	}
	for _, e := range st.dupErrs {
		r.Errors = append(r.Errors, e...)
	}
	r.Errors = append(r.Errors, st.meshErrs...)
	resources.SortErrors(r.Errors)
	st.prev = r
	return r
}

// meshConfig picks the MeshConfig in force as resources.Build does: the
// first by name.
func (st *state) meshConfig() (*v1alpha1.MeshConfig, []resources.SourceError) {
	var ds []resources.Decoded
	for k := range st.meshKeys {
		w := st.winners[k]
		ds = append(ds, resources.Decoded{Object: w.obj, Source: w.path, Document: w.doc})
	}
	if len(ds) == 0 {
		return nil, nil
	}
	slices.SortFunc(ds, func(a, b resources.Decoded) int { return strings.Compare(a.GetName(), b.GetName()) })
	var errs []resources.SourceError
	for _, d := range ds[1:] {
		errs = append(errs, resources.ExtraMeshConfigError(d, ds[0]))
	}
	mc, _ := ds[0].Object.(*v1alpha1.MeshConfig)
	return mc, errs
}

// rebuild is the snapshot from scratch with resources.Build, over the
// objects as they stand (generations assigned). It is what snapshot's
// patches must be equal to.
func (st *state) rebuild() *resources.Resources {
	paths := make([]string, 0, len(st.registered))
	for p := range st.registered {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var objs []resources.Decoded
	for _, p := range paths {
		for _, o := range st.registered[p] {
			objs = append(objs, resources.Decoded{Object: o.object(), Source: p, Document: o.doc})
		}
	}
	return resources.Build(objs)
}

// assignGeneration returns the object of o with the generation it should
// have as the winner of k: 1 when first seen, one more whenever its spec
// changes. Objects already handed out in a snapshot are never modified; a
// copy carries the new generation and replaces it in the cache.
func (st *state) assignGeneration(k objKey, o fileObj) resources.Object {
	e, i := o.entry, o.i
	spec := e.specs[i]
	g, ok := st.gens[k]
	switch {
	case !ok:
		g = generation{gen: 1, spec: spec}
	case g.spec != spec:
		g = generation{gen: g.gen + 1, spec: spec}
	}
	st.gens[k] = g
	obj := e.objs[i]
	if obj.GetGeneration() != g.gen {
		if e.shared[i] {
			obj = obj.DeepCopyObject().(resources.Object)
		}
		obj.SetGeneration(g.gen)
		e.objs[i] = obj
	}
	e.shared[i] = true
	return obj
}

// specHash hashes everything but metadata and status: what the API server
// bumps metadata.generation for.
func specHash(o resources.Object) [sha256.Size]byte {
	b, err := json.Marshal(o)
	if err != nil {
		return sha256.Sum256([]byte(err.Error()))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return sha256.Sum256(b)
	}
	for _, f := range []string{"metadata", "status", "apiVersion", "kind"} {
		delete(m, f)
	}
	b, _ = json.Marshal(m) // map keys are sorted, so equal specs hash equally
	return sha256.Sum256(b)
}

// syncWatches watches every directory of the tree and reports whether any
// was added.
func (st *state) syncWatches(dirs []string) bool {
	if st.watcher == nil {
		return false
	}
	added := false
	want := make(map[string]bool, len(dirs))
	for _, d := range dirs {
		want[d] = true
		if st.watched[d] {
			continue
		}
		if err := st.watcher.Add(d); err != nil {
			// Usually the directory vanished again; the next event rescans.
			continue
		}
		st.watched[d], added = true, true
	}
	for d := range st.watched {
		if !want[d] {
			_ = st.watcher.Remove(d) // fails when the kernel already dropped it with the directory
			delete(st.watched, d)
		}
	}
	return added
}

// skipName reports hidden files and directories and editor leftovers.
func skipName(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") || strings.HasSuffix(name, "~")
}

func isYAML(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// unwrapPath drops the path from *fs.PathError: messages already name it.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func equalErrors(a, b []resources.SourceError) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
