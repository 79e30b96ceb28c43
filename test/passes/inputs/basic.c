struct list_head { struct list_head *next, *prev; };
struct item { unsigned long id; struct list_head node; };
extern struct list_head items;
long ciel_mon_count(void *out, unsigned long out_len, const void *in, unsigned long in_len) {
  long n = 0;
  for (struct list_head *p = items.next; p != &items && n < 1000; p = p->next) {
    struct item *it = (struct item *)((char *)p - 8);
    ((unsigned long *)out)[n & 15] = it->id;
    n++;
  }
  return n;
}
